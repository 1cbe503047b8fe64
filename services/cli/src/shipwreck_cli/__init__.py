"""The `shipwreck` command line: a client of Shipwreck's GraphQL API."""

"""Shipwreck."""

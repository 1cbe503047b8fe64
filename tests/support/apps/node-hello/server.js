// A tiny web app: its answer needs a package from npm (installed at build time).
const http = require("http");
const ms = require("ms");

const port = Number(process.env.PORT || 3000);
http
  .createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
    res.end(`node says: a minute is ${ms(60000)}, a day is ${ms(ms("1d"), { long: true })}\n`);
  })
  .listen(port, "0.0.0.0", () => console.log(`listening on 0.0.0.0:${port}`));

// Validates AsyncAPI documents with the official parser (@asyncapi/parser, from .tools/npm).
// Usage: node asyncapi_validate.cjs <node_modules folder> <file>...
// Prints one JSON object: file -> the parser's errors (severity 0), each "path: message".
const path = require("path");
const fs = require("fs");
const { Parser } = require(path.resolve(process.argv[2], "@asyncapi", "parser"));

async function main() {
  const parser = new Parser();
  const out = {};
  for (const file of process.argv.slice(3)) {
    const { diagnostics } = await parser.parse(fs.readFileSync(file, "utf8"), { source: file });
    out[file] = diagnostics
      .filter((d) => d.severity === 0)
      .map((d) => `${d.path.join(".")}: ${d.message}`);
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(2);
});

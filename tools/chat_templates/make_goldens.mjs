// Renders the golden outputs of tests/goldens/chat_templates with Hugging Face's own Jinja implementation
// (npm @huggingface/jinja 0.5.11), the independent reference our engine (src/chat) must match byte for byte.
//
//   mkdir -p /tmp/jinja-ref && cd /tmp/jinja-ref && npm init -y && npm install @huggingface/jinja@0.5.11
//   TZ=UTC node tools/chat_templates/make_goldens.mjs /tmp/jinja-ref ../shared/chat-templates tests/goldens/chat_templates
//
// Writes, under the goldens folder:
//   expected/<template>.json: for every cases/*.json conversation, with add_generation_prompt on and off,
//     {"output": text} or {"error": message};
//   tricky_expected.json: every section of tricky.txt (our own small templates) rendered with tricky_context.json.
// The clock is fixed (FIXED_NOW below, UTC), so templates that call strftime_now() render the same every day.
import fs from "fs";
import path from "path";
import { createRequire } from "module";

const [refDir, templatesDir, goldensDir] = process.argv.slice(2);
if (!refDir || !templatesDir || !goldensDir) {
  console.error("usage: node make_goldens.mjs JINJA_REF_DIR SHARED_CHAT_TEMPLATES_DIR GOLDENS_DIR");
  process.exit(2);
}
const require = createRequire(path.resolve(refDir, "package.json"));
const { Template } = require("@huggingface/jinja");

const FIXED_NOW = Date.UTC(2026, 0, 15, 10, 30, 0);  // 2026-01-15 10:30 UTC; keep in sync with chat_template_test.cc
const RealDate = Date;
globalThis.Date = class extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(FIXED_NOW);
    else super(...args);
  }
  static now() { return FIXED_NOW; }
};

function render(source, vars) {
  try {
    return { output: new Template(source).render(vars) };
  } catch (e) {
    return { error: String(e && e.message !== undefined ? e.message : e) };
  }
}

const BOS = "<s>", EOS = "</s>";
const casesDir = path.join(goldensDir, "cases");
const cases = fs.readdirSync(casesDir).filter((f) => f.endsWith(".json")).sort();
fs.mkdirSync(path.join(goldensDir, "expected"), { recursive: true });
for (const tplFile of fs.readdirSync(templatesDir).filter((f) => f.endsWith(".jinja")).sort()) {
  const source = fs.readFileSync(path.join(templatesDir, tplFile), "utf8");
  const result = {};
  for (const c of cases) {
    const conv = JSON.parse(fs.readFileSync(path.join(casesDir, c), "utf8"));
    const base = Array.isArray(conv) ? { messages: conv } : { ...conv };
    const name = c.replace(/\.json$/, "");
    result[name] = {};
    for (const agp of [true, false]) {
      result[name][agp ? "generation_prompt" : "no_generation_prompt"] =
        render(source, { ...base, add_generation_prompt: agp, bos_token: BOS, eos_token: EOS });
    }
  }
  fs.writeFileSync(path.join(goldensDir, "expected", tplFile.replace(/\.jinja$/, ".json")), JSON.stringify(result, null, 1) + "\n");
}

// tricky.txt: sections "### name" followed by the template (up to the next "### " line).
const tricky = fs.readFileSync(path.join(goldensDir, "tricky.txt"), "utf8");
const context = JSON.parse(fs.readFileSync(path.join(goldensDir, "tricky_context.json"), "utf8"));
const expected = {};
const lines = tricky.split("\n");
let name = null, body = [];
const flush = () => {
  if (name !== null) expected[name] = render(body.join("\n"), context);
};
for (const line of lines) {
  if (line.startsWith("### ")) {
    flush();
    name = line.slice(4).trim();
    if (name in expected) throw new Error("duplicate tricky case " + name);
    body = [];
  } else if (name !== null) {
    body.push(line);
  }
}
flush();
fs.writeFileSync(path.join(goldensDir, "tricky_expected.json"), JSON.stringify(expected, null, 1) + "\n");
console.log(`${cases.length} cases x templates, ${Object.keys(expected).length} tricky cases`);

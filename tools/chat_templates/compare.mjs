// Checks kvshare's chat templates against Hugging Face's own Jinja implementation (npm @huggingface/jinja 0.5.11)
// on any folder of templates, e.g. ones the project has never seen: every *.jinja in TEMPLATES_DIR x every
// conversation in CASES_DIR (tests/goldens/chat_templates/cases), with add_generation_prompt on and off, rendered
// by the reference in-process and by `kvshare chat-template`. A case passes when both give the same bytes, or
// both raise an error. Prints one line per difference and a summary; exits 1 on any difference.
//
//   mkdir -p /tmp/jinja-ref && cd /tmp/jinja-ref && npm init -y && npm install @huggingface/jinja@0.5.11
//   TZ=UTC node tools/chat_templates/compare.mjs /tmp/jinja-ref build/kvshare TEMPLATES_DIR tests/goldens/chat_templates/cases
//
// Both sides read the real clock (templates that call strftime_now() print today's date), so run it in UTC.
import fs from "fs";
import path from "path";
import { execFileSync } from "child_process";
import { createRequire } from "module";

const [refDir, kvshare, templatesDir, casesDir] = process.argv.slice(2);
if (!refDir || !kvshare || !templatesDir || !casesDir) {
  console.error("usage: node compare.mjs JINJA_REF_DIR KVSHARE_BINARY TEMPLATES_DIR CASES_DIR");
  process.exit(2);
}
const require = createRequire(path.resolve(refDir, "package.json"));
const { Template } = require("@huggingface/jinja");
const BOS = "<s>", EOS = "</s>";

function reference(source, vars) {
  try {
    return { output: new Template(source).render(vars) };
  } catch (e) {
    return { error: String(e && e.message !== undefined ? e.message : e) };
  }
}

function ours(templateFile, caseFile, agp) {
  const args = ["chat-template", "--template", templateFile, "--messages", caseFile, "--bos-token", BOS, "--eos-token", EOS];
  if (!agp) args.push("--no-generation-prompt");
  try {
    return { output: execFileSync(kvshare, args, { stdio: ["ignore", "pipe", "pipe"], timeout: 60000 }).toString("utf8") };
  } catch (e) {
    return { error: e.stderr ? e.stderr.toString("utf8").trim() : String(e) };
  }
}

const excerpt = (s, i) => JSON.stringify(s.slice(Math.max(0, i - 40), i + 60));
const cases = fs.readdirSync(casesDir).filter((f) => f.endsWith(".json")).sort();
const templates = fs.readdirSync(templatesDir).filter((f) => f.endsWith(".jinja")).sort();
const count = { same: 0, bothError: 0, differ: 0 };
for (const t of templates) {
  const templateFile = path.join(templatesDir, t);
  const source = fs.readFileSync(templateFile, "utf8");
  for (const c of cases) {
    const caseFile = path.join(casesDir, c);
    const conv = JSON.parse(fs.readFileSync(caseFile, "utf8"));
    const base = Array.isArray(conv) ? { messages: conv } : { ...conv };
    for (const agp of [true, false]) {
      const want = reference(source, { ...base, add_generation_prompt: agp, bos_token: BOS, eos_token: EOS });
      const got = ours(templateFile, caseFile, agp);
      const where = `${t} ${c} add_generation_prompt=${agp}`;
      if (want.error !== undefined && got.error !== undefined) {
        count.bothError++;
      } else if (want.error !== undefined) {
        count.differ++;
        console.log(`${where}: the reference raises (${want.error}), kvshare renders`);
      } else if (got.error !== undefined) {
        count.differ++;
        console.log(`${where}: kvshare fails (${got.error}), the reference renders`);
      } else if (got.output === want.output) {
        count.same++;
      } else {
        count.differ++;
        let i = 0;
        while (i < got.output.length && got.output[i] === want.output[i]) i++;
        console.log(`${where}: differ at character ${i}: kvshare ${excerpt(got.output, i)}, reference ${excerpt(want.output, i)}`);
      }
    }
  }
}
console.log(`${templates.length} templates x ${cases.length} conversations x 2: ${count.same} identical, ` +
            `${count.bothError} raise in both, ${count.differ} differ`);
process.exit(count.differ ? 1 : 0);

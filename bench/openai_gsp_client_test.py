"""End-to-end test of bench/openai_gsp_client.py, the serving benchmark's client, against `kvshare serve`.

A small gsp shape (2 groups x 3 prompts sharing 40 tokens): every request is answered with exactly its output
length, the cached tokens reported are the ideal (each group's shared full blocks, computed once), and the
prompts the client dumps run as a `kvshare generate` batch job (as bench/llamacpp_compare.sh runs them) to the
very texts the server returned.

Run by CTest (bench_gsp_client_test); needs ../shared/models/tinystories-656k (skips without it).
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "server"))
import serve_util  # noqa: E402

serve_util.skip_without_model()

GROUPS, PER_GROUP, SYSTEM_LEN, QUESTION_LEN, OUTPUT_LEN = 2, 3, 40, 8, 4
BLOCK_SIZE = 16


class GspClientTest(unittest.TestCase):
    def test_served_answers_match_the_batch_job_of_the_dumped_prompts(self):
        with tempfile.TemporaryDirectory() as tmp:
            prompts = os.path.join(tmp, "prompts.jsonl")
            served = os.path.join(tmp, "served.jsonl")
            server = serve_util.Server("--block-size", str(BLOCK_SIZE))
            try:
                run = subprocess.run(
                    [sys.executable, os.path.join(HERE, "openai_gsp_client.py"), "--url", server.url,
                     "--groups", str(GROUPS), "--prompts-per-group", str(PER_GROUP), "--system-len", str(SYSTEM_LEN),
                     "--question-len", str(QUESTION_LEN), "--output-len", str(OUTPUT_LEN), "--concurrency", "3",
                     # tinystories-656k: 2048 tokens, 2 is its EOS
                     "--token-lo", "3", "--token-hi", "2048", "--avoid", "2",
                     "--dump-prompts", prompts, "--save-outputs", served],
                    capture_output=True, text=True, timeout=300)
            finally:
                code = server.stop()
            self.assertEqual(code, 0, "".join(server.log))  # a clean exit (under ASan: no leak, no report)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            report = json.loads(run.stdout)
            n = GROUPS * PER_GROUP
            self.assertEqual(report["requests"], n)
            self.assertEqual(report["requests_not_at_output_len"], 0)
            self.assertEqual(report["completion_tokens"], n * OUTPUT_LEN)
            # The server adds no BOS to token-id prompts: each is its system prompt and question.
            self.assertEqual(report["prompt_tokens"], n * (SYSTEM_LEN + QUESTION_LEN))
            # Each group's first prompt computes the shared full blocks; its other prompts are served them.
            shared = SYSTEM_LEN // BLOCK_SIZE * BLOCK_SIZE
            self.assertEqual(report["cached_prompt_tokens"], GROUPS * (PER_GROUP - 1) * shared)

            with open(prompts) as f:
                lines = [json.loads(line) for line in f]
            self.assertEqual(len(lines), n)
            self.assertTrue(all(len(r["prompt_token_ids"]) == SYSTEM_LEN + QUESTION_LEN for r in lines))
            # Interleaved arrivals: g0p0, g1p0, g0p1, ...; a group's prompts share their first SYSTEM_LEN tokens.
            self.assertEqual(lines[0]["prompt_token_ids"][:SYSTEM_LEN], lines[GROUPS]["prompt_token_ids"][:SYSTEM_LEN])
            self.assertNotEqual(lines[0]["prompt_token_ids"][:SYSTEM_LEN], lines[1]["prompt_token_ids"][:SYSTEM_LEN])

            batch = os.path.join(tmp, "batch.jsonl")
            gen = subprocess.run([serve_util.kvshare_bin(), "generate", "--model", serve_util.MODEL, "--input", prompts,
                                  "--output", batch, "--kv-cache-memory", "64MiB", "--no-progress"],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(gen.returncode, 0, gen.stderr)
            with open(batch) as f:
                batch_texts = [json.loads(line)["text"] for line in f]
            with open(served) as f:
                served_texts = [json.loads(line)["text"] for line in f]
            self.assertEqual(len(served_texts), n)
            self.assertEqual(batch_texts, served_texts)


if __name__ == "__main__":
    unittest.main()

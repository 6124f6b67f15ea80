// kvshare serve --model MODEL [--host H] [--port P] [--api-key KEY] [--served-model-name NAME] [engine flags]:
// the OpenAI-compatible HTTP server (src/server/). SIGINT/SIGTERM stop it gracefully: requests in flight end
// (aborted), the listening socket closes, the process exits 0.
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "server/http_server.h"

namespace kvshare::cli {

int run_serve(const std::vector<std::string>& argv) {
  std::vector<FlagSpec> specs = engine_flag_specs();
  const std::vector<FlagSpec> own = {
      {"host", true, "address to listen on (127.0.0.1; 0.0.0.0 for every interface)"},
      {"port", true, "port to listen on (8000; 0 = any free port, printed at start)"},
      {"api-key", true, "require 'Authorization: Bearer KEY' on /v1/* (default: no key)"},
      {"served-model-name", true, "the model's name in the API (default: the model path's last part)"},
      {"chat-template", true, "a Jinja chat template file to use instead of the model's own"},
      {"tool-call-parser", true, "read the tool calls a model writes of its own choosing (tool_choice \"auto\") into "
                                 "replies' tool_calls, in its format: hermes (<tool_call> blocks: Qwen2.5, Qwen3, "
                                 "Hermes) or llama3_json (Llama 3.x); without it, such replies stay text"},
      {"enable-auto-tool-choice", false, "accepted for vLLM's command lines: --tool-call-parser alone turns it on"},
      {"max-waiting-requests", true, "answer 503 (Retry-After) when more requests than this wait (1024)"},
      {"max-body-bytes", true, "largest request body accepted, in bytes, at least 1024 (33554432)"},
      {"http-threads", true, "connections served at once, one thread each, started as needed (512)"},
      {"seed", true, "seeds requests that give no seed of their own (0)"},
      {"help", false, "show this help"},
  };
  specs.insert(specs.end(), own.begin(), own.end());
  auto args = Args::parse("serve", specs, argv);
  if (!args.ok()) return usage_error("serve", args.status());
  if (args->has("help")) {
    std::fputs(usage("serve --model MODEL",
                     "Serve the model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, "
                     "/v1/models, /tokenize, /detokenize, /metrics, /health).",
                     specs)
                   .c_str(),
               stdout);
    return 0;
  }
  if (!args->positional().empty())
    return usage_error("serve", invalid_argument("unexpected argument '" + args->positional()[0] + "'"));
  Result<EngineConfig> config = engine_config_from(*args);
  if (!config.ok()) return fail("serve", config.status());
  server::ServerConfig sc;
  sc.host = args->get_or("host", sc.host);
  sc.api_key = args->get_or("api-key", "");
  sc.served_model_name = args->get_or("served-model-name", "");
  sc.chat_template_path = args->get_or("chat-template", "");
  if (args->has("tool-call-parser") &&
      !server::tool_call_parser_named(args->get_or("tool-call-parser", ""), sc.tool_call_parser))
    return fail("serve", invalid_argument("--tool-call-parser must be one of: " +
                                          std::string(server::kToolCallParserNames)));
  if (args->has("enable-auto-tool-choice") && !args->has("tool-call-parser"))
    return fail("serve", invalid_argument("--enable-auto-tool-choice needs --tool-call-parser NAME (" +
                                          std::string(server::kToolCallParserNames) + "), the model's format"));
  auto port = args->get_int("port", sc.port);
  auto waiting = args->get_int("max-waiting-requests", sc.max_waiting_requests);
  auto body = args->get_int("max-body-bytes", sc.max_body_bytes);
  auto threads = args->get_int("http-threads", sc.http_threads);
  auto seed = args->get_int("seed", 0);
  for (const auto* r : {&port, &waiting, &body, &threads, &seed})
    if (!r->ok()) return fail("serve", r->status());
  if (*port < 0 || *port > 65535) return fail("serve", invalid_argument("--port must be in [0, 65535]"));
  if (*body < 1024) return fail("serve", invalid_argument("--max-body-bytes must be at least 1024"));
  if (*threads < 1 || *threads > 4096) return fail("serve", invalid_argument("--http-threads must be in [1, 4096]"));
  sc.port = static_cast<int>(*port);
  sc.max_waiting_requests = *waiting;
  sc.max_body_bytes = *body;
  sc.http_threads = static_cast<int32_t>(*threads);
  config->seed = static_cast<uint64_t>(*seed);

  // SIGINT and SIGTERM are taken by one thread (sigwait), blocked everywhere else: set before any thread starts.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::fprintf(stderr, "kvshare serve: loading %s\n", config->model_path.c_str());
  auto engine = Engine::create(*config);  // on a thread of its own, so that the engine thread steps at full speed
  if (!engine.ok()) return fail("serve", engine.status());
  auto server = server::HttpServer::create(std::move(engine).value(), sc);
  if (!server.ok()) return fail("serve", server.status());
  if (Status st = (*server)->bind(); !st.ok()) return fail("serve", st);
  if (!(*server)->chat_template_problem().empty())
    std::fprintf(stderr,
                 "kvshare serve: warning: no chat template (%s); /v1/chat/completions will answer 400 until the "
                 "server is started with --chat-template FILE; /v1/completions works\n",
                 printable((*server)->chat_template_problem()).c_str());
  if (const server::ToolCallParser suggested = (*server)->suggested_tool_call_parser();
      sc.tool_call_parser == server::ToolCallParser::kNone && suggested != server::ToolCallParser::kNone)
    std::fprintf(stderr,
                 "kvshare serve: note: the chat template asks the model for tool calls in the %s format; start with "
                 "--tool-call-parser %s so that replies to tool_choice \"auto\" carry them as tool_calls\n",
                 server::tool_call_parser_name(suggested), server::tool_call_parser_name(suggested));
  std::fprintf(stderr, "kvshare serve: serving '%s' on http://%s:%d (Ctrl-C stops)\n", (*server)->model_name().c_str(),
               sc.host.c_str(), (*server)->port());
  std::fflush(stderr);

  server::HttpServer* s = server->get();
  std::thread signals([s, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (sig == SIGINT || sig == SIGTERM) {
      std::fprintf(stderr, "kvshare serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
      s->stop();
    }
  });
  s->run();
  s->stop();
  pthread_kill(signals.native_handle(), SIGTERM);  // wakes the signal thread if run() ended on its own
  signals.join();
  std::fprintf(stderr, "kvshare serve: stopped\n");
  return 0;
}

}  // namespace kvshare::cli

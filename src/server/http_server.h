// kvshare's OpenAI-compatible HTTP server (cpp-httplib). HTTP threads parse and check requests, render chat
// templates and tokenize; the EngineLoop's one thread runs the engine for all of them (engine_loop.h).
//
//   POST /v1/completions, /v1/chat/completions   (stream: server-sent events)
//   GET  /v1/models, /health, /metrics, /version
//   POST /tokenize, /detokenize, /reset_prefix_cache
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvshare/engine.h"
#include "server/tool_calls.h"

namespace kvshare::server {

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8000;                      // 0: any free port (see HttpServer::port())
  std::string api_key;                  // when set, /v1/* needs "Authorization: Bearer KEY"
  std::string served_model_name;        // the model's name in the API; default: the model path's last part
  std::string chat_template_path;       // a Jinja file overriding the model's own chat template
  // How the model writes tool calls of its own choosing (tool_choice "auto"), read into replies' tool_calls;
  // kNone: such replies stay text.
  ToolCallParser tool_call_parser = ToolCallParser::kNone;
  // Sequences (prompts × n, or × best_of) allowed to wait for the engine: a request that would take the queue
  // beyond this gets 503 with Retry-After; one that alone asks for more gets 400.
  int64_t max_waiting_requests = 1024;
  int64_t max_body_bytes = 32 << 20;    // larger request bodies: 413
  // Connections served at once: one thread each, started as needed. Idle keep-alive connections and clients
  // still sending their headers hold one too, hence far more than the engine runs requests.
  int32_t http_threads = 512;
};

class HttpServer {
 public:
  // Takes the engine (its thread is started here) and checks the configuration (the chat template file).
  static Result<std::unique_ptr<HttpServer>> create(std::unique_ptr<Engine> engine, ServerConfig config);
  ~HttpServer();

  // Binds the listening socket (so the port is known before run()).
  Status bind();
  int port() const;
  const std::string& model_name() const;
  // Why chat requests cannot be served ("" when a chat template is loaded): the model has none, or its template
  // does not parse. kvshare serve prints it at start, rather than on the first chat request.
  const std::string& chat_template_problem() const;
  // The tool-call parser the model's chat template suggests (tool_call_parser_suggested), kNone without one.
  ToolCallParser suggested_tool_call_parser() const;
  // Serves until stop(). Returns when every connection's handler has returned.
  void run();
  // Graceful stop, from any thread: refuses new requests, cancels the ones in flight (their streams end with
  // finish_reason "abort"), stops listening. run() then returns.
  void stop();

 private:
  HttpServer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvshare::server

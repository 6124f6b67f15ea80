#include "server/http_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <system_error>
#include <thread>
#include <vector>

#include "chat/chat_template.h"
#include "chat/final_message.h"
#include "core/mapped_file.h"
#include "core/splitmix.h"
#include "engine/context_limit.h"
#include "model/config.h"
#include "server/engine_loop.h"
#include "server/metrics.h"
#include "server/openai_api.h"
#include "tokenizer/tokenizer.h"

namespace kvshare::server {

namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(50);
// The kernel's queue of connections not yet accepted. Debian's cpp-httplib is a compiled library that listens
// with a queue of 5: a burst of clients (32 SDK clients at once) overflowed it, the kernel dropped their SYNs (a
// client then waits a second or more for its retry) or answered with SYN cookies, and a client could see its
// connection reset ("Connection error."). bind() listens again on the bound socket with this queue.
constexpr int kListenBacklog = 512;

// How long stop() lets whole (non-streamed) responses of aborted requests be written before it wakes every
// connection still open.
constexpr auto kStopGrace = std::chrono::seconds(2);

// The threads that serve connections. cpp-httplib serves a connection on one thread from accept to close,
// including the time a keep-alive connection sits idle (up to 5 s) and the time a client takes to send its
// headers (5 s per read, so unbounded for one that trickles bytes). Its fixed ThreadPool of 64 was taken by
// 64 idle or slow connections, and a real request waited behind them. This pool starts a thread whenever a
// connection arrives and none is free, up to `max_threads`, so an idle or slow connection costs one sleeping
// thread rather than a place in line; threads stay for the next connections.
class ConnectionThreads : public httplib::TaskQueue {
 public:
  explicit ConnectionThreads(size_t max_threads) : max_threads_(max_threads) {}
  ~ConnectionThreads() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(fn));
      if (idle_ < jobs_.size() && threads_.size() < max_threads_) {
        try {
          threads_.emplace_back([this] { work(); });
        } catch (const std::system_error&) {
          // No thread to spare (a process or memory limit): the connection waits for a free one.
        }
      }
    }
    cv_.notify_one();
  }

  // Serves the connections already queued (cpp-httplib's own pool does too: each ends at once when the
  // server is stopping), then joins every thread.
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_)
      if (t.joinable()) t.join();
  }

 private:
  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return !jobs_.empty() || stopping_; });
      --idle_;
      if (jobs_.empty()) return;  // stopping, nothing left
      std::function<void()> fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  const size_t max_threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;  // added only by enqueue() and joined by shutdown(): both on the listening thread
  size_t idle_ = 0;                   // threads waiting for a job
  bool stopping_ = false;
};

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.to_json(), e.status);
  if (e.status == 503) res.set_header("Retry-After", "1");
}

// A socket's port and address as text ("" when it is not IPv4 or IPv6).
int port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return static_cast<int>(ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port));
  if (a.ss_family == AF_INET6) return static_cast<int>(ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port));
  return -1;
}
std::string addr_of(const sockaddr_storage& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(a).sin_addr, buf, sizeof buf);
  if (a.ss_family == AF_INET6) inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(a).sin6_addr, buf, sizeof buf);
  return std::string(buf);
}

// Calls fn(fd, peer address, peer port) for each of the process' connected TCP sockets whose local port is
// `local_port`: the server's client connections, which cpp-httplib does not hand out. The peer is read with
// SO_PEERNAME rather than getpeername(), which fails (ENOTCONN) once the peer has reset the connection: a
// client that went away with an RST must still be found, to abort its requests.
//
// One scan at a time: a scan's own directory descriptor is among the ones another scan lists, so two at once had
// one thread ask getsockname() of the descriptor the other was closing (a race ThreadSanitizer reported, under
// test_json_mode's many requests).
template <typename Fn>
void for_each_connection(int local_port, Fn fn) {
  static std::mutex scanning;
  std::lock_guard<std::mutex> lock(scanning);
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || end == entry->d_name) continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof local;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    if (port_of(local) != local_port) continue;
    // SO_PEERNAME wants exactly the family's address size (a larger buffer is EINVAL).
    socklen_t peer_len = local.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_PEERNAME, &peer, &peer_len) != 0) continue;  // listening
    if (!fn(static_cast<int>(fd), addr_of(peer), port_of(peer))) break;
  }
  closedir(dir);
}

// The socket that carries `req`, found by its two addresses, so that a handler can notice that its client hung
// up. -1 if not found.
int find_connection_socket(const httplib::Request& req) {
  int found = -1;
  for_each_connection(req.local_port, [&](int fd, const std::string& addr, int port) {
    if (port != req.remote_port || addr != req.remote_addr) return true;
    found = fd;
    return false;
  });
  return found;
}

// True when the client closed its end (an orderly shutdown or a reset); data it sent ahead does not count.
bool connection_closed(int fd) {
  if (fd < 0) return false;
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

// One API call in flight: its engine requests (one per prompt), the choices being built, and the way back to
// its client. Shared between the handler and, when streaming, cpp-httplib's content provider.
struct Call {
  GenerationCall api;
  ResponseContext ctx;
  std::vector<std::shared_ptr<RequestStream>> streams;  // one per prompt
  std::vector<std::vector<ChoiceState>> states;         // [prompt][completion]
  std::vector<int64_t> prompt_tokens;                    // per prompt
  std::shared_ptr<Notifier> notifier;  // made once `api` is read: a stream wakes at every step, a reply when done
  uint64_t seen = 0;
  bool finished = false;
  int socket = -1;

  int32_t n() const { return std::max<int32_t>(1, api.params.n); }  // the engine's completions per prompt
  // Latest outputs of every prompt's completions, their new logprobs moved into the choices' states; true
  // when all have finished.
  bool collect(std::vector<std::vector<Output>>& outputs) {
    outputs.resize(streams.size());
    bool all = true;
    for (size_t i = 0; i < streams.size(); ++i) {
      all = streams[i]->snapshot(outputs[i]) && all;
      for (Output& o : outputs[i]) {
        take_logprobs(states[i][o.index], o);
        if (o.index == 0) take_prompt_logprobs(states[i], o);
      }
    }
    return all;
  }
  // Echo with logprobs, prompt_logprobs: the prompt's logprobs come with completion 0's first output (and its
  // last), for every choice of the prompt.
  void take_prompt_logprobs(std::vector<ChoiceState>& choices, Output& o) const {
    if (!api.wants_prompt_logprobs() || choices[0].prompt != nullptr) return;
    if (o.prompt_logprobs.size() + 1 != o.prompt_token_ids.size()) return;  // not computed (yet)
    auto prompt = std::make_shared<PromptLogprobs>();
    prompt->token_ids = o.prompt_token_ids;
    prompt->logprobs = std::move(o.prompt_logprobs);
    for (ChoiceState& c : choices) c.prompt = prompt;
  }
  Usage usage(const std::vector<std::vector<Output>>& outputs) const {
    Usage u;
    for (size_t i = 0; i < outputs.size(); ++i) {
      u.prompt_tokens += prompt_tokens[i];
      if (!outputs[i].empty()) u.cached_tokens += outputs[i][0].num_cached_tokens;
      for (const Output& o : outputs[i]) u.completion_tokens += static_cast<int64_t>(o.token_ids.size());
    }
    return u;
  }
};

// best_of: keeps the `n` choices of prompt `prompt` with the highest cumulative logprob (ties: the lower
// completion index first), in that order, numbered prompt * n + rank.
void keep_best(std::vector<std::pair<ChoiceState, Output>>& choices, int32_t n, int32_t prompt) {
  std::vector<double> score(choices.size());
  for (size_t j = 0; j < choices.size(); ++j) score[j] = cumulative_logprob(choices[j].first);
  std::vector<size_t> order(choices.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] > score[b]; });
  std::vector<std::pair<ChoiceState, Output>> best;
  for (size_t rank = 0; rank < order.size() && rank < static_cast<size_t>(n); ++rank) {
    best.push_back(std::move(choices[order[rank]]));
    best.back().first.index = prompt * n + static_cast<int32_t>(rank);
  }
  choices = std::move(best);
}

}  // namespace

struct HttpServer::Impl {
  ServerConfig config;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<EngineLoop> loop;
  ServerMetrics metrics;
  httplib::Server http;
  std::optional<ModelChatTemplates> chat_templates;  // none: the model has no chat template
  std::string chat_template_problem;            // why there is none
  int64_t max_model_len = 0;
  int64_t kv_cache_tokens = 0;  // the whole KV cache, in tokens: a chat without max_tokens generates at most to it
  bool context_can_grow = false;  // --max-model-len set below the model's context
  int64_t created = std::time(nullptr);
  std::atomic<uint64_t> next_call{0};
  uint64_t id_salt = 0;
  std::atomic<bool> stopping{false};
  std::atomic<int> open_streams{0};  // streaming responses not yet fully written
  std::atomic<int> open_calls{0};    // generation handlers not yet returned
  int bound_port = -1;
  int listen_fd = -1;  // the listening socket, as cpp-httplib made it (set_socket_options)

  const Tokenizer& tokenizer() const { return engine->tokenizer(); }
  std::string new_id(const char* prefix) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx",
                  static_cast<unsigned long long>(splitmix64_mix(id_salt + next_call.fetch_add(1))));
    return std::string(prefix) + buf;
  }

  void routes();
  using PostHandler = std::function<void(const httplib::Request&, const std::string& body, httplib::Response&)>;
  void post(const std::string& path, PostHandler handler);
  bool read_body(const httplib::Request& req, const httplib::ContentReader& read, httplib::Response& res,
                 std::string& body) const;
  bool content_length_ok(const httplib::Request& req, httplib::Response& res) const;
  bool authorized(const httplib::Request& req, httplib::Response& res) const;
  bool check_model(const std::string& model, httplib::Response& res) const;
  Result<std::string> render_chat(const GenerationCall& call) const;
  bool prepare_prompts(GenerationCall& call, ApiError& error) const;
  // Text far over the context is refused from its length, before BPE (over a 30 MB body, BPE held an HTTP
  // thread for 30 s): true, with the error naming `param`.
  bool far_too_long(const std::string& text, const char* param, ApiError& error, bool truncating = false) const {
    const Status st =
        check_prompt_text_length(text.size(), tokenizer().min_tokens(text.size()), max_model_len, truncating);
    if (st.ok()) return false;
    error = from_status(st);  // 400 context_length_exceeded
    error.param = param;
    return true;
  }
  bool admissible_alone(const GenerationCall& call, int64_t prompts, int64_t sequences, ApiError& error) const;
  // Whether the tokenizer put its BOS first when it encoded `p`: text (a completion's, or a chat's rendering)
  // encoded with add_special_tokens (a chat's template writes its own otherwise).
  bool tokenizer_adds_bos(const GenerationCall& call, const PromptInput& p) const {
    return (call.chat || p.is_text) && call.add_special_tokens && tokenizer().adds_bos();
  }
  // What echo shows of a completion's prompt: its text, or, cut by truncate_prompt_tokens, the tokens that ran,
  // without the BOS the tokenizer added (the uncut text does not show it either).
  std::string echo_text(const GenerationCall& call, const PromptInput& p) const {
    if (p.is_text && !p.truncated) return p.text;
    const bool skip_bos = tokenizer_adds_bos(call, p) && !p.token_ids.empty() &&
                          p.token_ids.front() == tokenizer().bos_id();
    return tokenizer().decode(std::vector<int32_t>(p.token_ids.begin() + (skip_bos ? 1 : 0), p.token_ids.end()));
  }
  void generate(const httplib::Request& req, const std::string& body, httplib::Response& res, bool chat);
  void respond_when_done(const std::shared_ptr<Call>& call, httplib::Response& res);
  void stream(const std::shared_ptr<Call>& call, httplib::Response& res);
  void abort_call(Call& call) {
    for (const auto& s : call.streams) loop->abort(s->id());
  }
  void tokenize(const std::string& text, httplib::Response& res);
  void detokenize(const std::string& text, httplib::Response& res);
};

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}
HttpServer::~HttpServer() {
  stop();
}

Result<std::unique_ptr<HttpServer>> HttpServer::create(std::unique_ptr<Engine> engine, ServerConfig config) {
  std::unique_ptr<HttpServer> server(new HttpServer());
  Impl& s = *server->impl_;
  if (config.served_model_name.empty()) {
    std::string path = engine->config().model_path;
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    config.served_model_name = path.substr(path.find_last_of('/') + 1);
  }
  if (config.max_waiting_requests < 0) return invalid_argument("--max-waiting-requests must be 0 or more");
  if (config.http_threads < 1) return invalid_argument("--http-threads must be at least 1");
  const Tokenizer& tok = engine->tokenizer();
  auto piece = [&](int32_t id) { return id >= 0 ? tok.token_piece(id) : std::string(); };
  if (!config.chat_template_path.empty()) {
    KV_ASSIGN_OR_RETURN(std::string source, read_chat_template_file(config.chat_template_path));
    Result<ChatTemplate> t = ChatTemplate::from_string(source, piece(tok.bos_id()), piece(tok.eos_id()));
    if (!t.ok()) return t.status().with_context(config.chat_template_path);
    s.chat_templates = ModelChatTemplates::single(std::move(t).value());
  } else if (Result<ModelChatTemplates> t = ModelChatTemplates::from_model(engine->config().model_path); t.ok()) {
    s.chat_templates = std::move(t).value();
  } else {
    s.chat_template_problem = t.status().message();
  }
  s.max_model_len = engine->max_model_len();
  s.kv_cache_tokens = int64_t{engine->metrics().blocks_total} * engine->config().block_size;
  s.context_can_grow = s.max_model_len < engine->model_config().max_context;
  s.config = std::move(config);
  s.engine = std::move(engine);
  s.id_salt = std::random_device{}();
  s.id_salt = (s.id_salt << 32) ^ std::random_device{}();
  s.loop = std::make_unique<EngineLoop>(*s.engine, [&s](const RequestTimes& t) { s.metrics.observe(t); });
  s.routes();
  return server;
}

Status HttpServer::bind() {
  Impl& s = *impl_;
  // cpp-httplib shows each socket it binds to this callback first; the last one is the one that listens.
  // SO_REUSEADDR only: a restart may bind a port whose old connections linger in TIME_WAIT. cpp-httplib's
  // default_socket_options also sets SO_REUSEPORT, with which a second kvshare serve on the same port started
  // without error and the two took turns answering.
  s.http.set_socket_options([&s](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    s.listen_fd = sock;
  });
  if (s.config.port == 0) {
    s.bound_port = s.http.bind_to_any_port(s.config.host);
    if (s.bound_port < 0) return invalid_argument("cannot listen on " + s.config.host + " (any port)");
  } else {
    if (!s.http.bind_to_port(s.config.host, s.config.port))
      return invalid_argument("cannot listen on " + s.config.host + ":" + std::to_string(s.config.port) +
                              " (is the port in use, or the address not this machine's?)");
    s.bound_port = s.config.port;
  }
  if (::listen(s.listen_fd, kListenBacklog) != 0)
    return internal_error(std::string("cannot set the listening socket's queue: ") + std::strerror(errno));
  return {};
}

int HttpServer::port() const { return impl_->bound_port; }
const std::string& HttpServer::model_name() const { return impl_->config.served_model_name; }
const std::string& HttpServer::chat_template_problem() const { return impl_->chat_template_problem; }
ToolCallParser HttpServer::suggested_tool_call_parser() const {
  if (!impl_->chat_templates) return ToolCallParser::kNone;
  return tool_call_parser_suggested([this](std::string_view text) { return impl_->chat_templates->mention(text); });
}

void HttpServer::run() {
  if (impl_->stopping.load()) return;  // stopped before it ran (see stop())
  impl_->http.listen_after_bind();
}

void HttpServer::stop() {
  Impl& s = *impl_;
  if (s.stopping.exchange(true)) return;
  if (s.loop) s.loop->shutdown();  // in-flight requests end (aborted); their handlers return
  // cpp-httplib stops calling content providers once it is stopping: let the streams write their last events
  // and [DONE] first (bounded, in case a client stopped reading).
  for (int i = 0; i < 500 && s.open_streams.load() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  s.http.stop();  // no new connections; each open one ends after its current request
  // cpp-httplib's stop() does nothing before its accept loop has started (a SIGTERM right after "serving" was
  // printed): the loop then started and ran for ever. Shutting the listening socket ends the loop either way,
  // since accept() on it fails at once.
  if (s.listen_fd >= 0) ::shutdown(s.listen_fd, SHUT_RDWR);
  // The handlers of whole responses return now that their requests ended: let them write those (bounded).
  // Then wake every connection still open. cpp-httplib checks for the stop only between requests, so an idle
  // keep-alive connection held run() up to its 5 s timeout, and one whose client trickles header bytes held it
  // for ever. A shutdown of the reading side ends their reads (and nothing is read from a client any more
  // anyway), while a response being written still goes out whole.
  const auto deadline = std::chrono::steady_clock::now() + kStopGrace;
  while (s.open_calls.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (s.bound_port >= 0)
    for_each_connection(s.bound_port, [](int fd, const std::string&, int) {
      ::shutdown(fd, SHUT_RD);
      return true;
    });
}

// cpp-httplib reads Content-Length with strtoull: "abc" became an empty body (then "not valid JSON") and "-1"
// a body of 2^64 - 1 bytes, which it tried to skip for 5 s before answering 413. The pre-routing handler runs
// after the headers and before the body, so a bad value is answered here, before any of the body is read.
// A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112, 6.3), but cpp-httplib reads
// a POST's body until the client closes: `curl -X POST URL` (vLLM's own example for /reset_prefix_cache) waited
// for the 5 s read timeout, then got a 400. Such a request is given its Content-Length of 0 here. (The request is
// the connection's own, not const: cpp-httplib hands it to this handler as const only by convention.)
bool HttpServer::Impl::content_length_ok(const httplib::Request& req, httplib::Response& res) const {
  const size_t count = req.get_header_value_count("Content-Length");
  if (count == 0) {
    if (!req.has_header("Transfer-Encoding")) const_cast<httplib::Request&>(req).set_header("Content-Length", "0");
    return true;
  }
  const std::string first = req.get_header_value("Content-Length");
  bool ok = !first.empty() && first.size() <= 18 && first.find_first_not_of("0123456789") == std::string::npos;
  for (size_t i = 1; ok && i < count; ++i) ok = req.get_header_value("Content-Length", i) == first;
  if (ok) return true;
  send_error(res, api_error(400, "invalid_request_error",
                            "bad Content-Length header \"" + first + "\"" + (count > 1 ? " (given more than once)" : "") +
                                ": it must be the body's size in bytes, a whole number"));
  // The body is left unread: what lies past cpp-httplib's 4 KiB read-ahead is read as the connection's next
  // requests (no conforming client or proxy sends such a header, so only the sender's connection is affected).
  // (Shutting the socket's reading side here ended it sooner, but closing it with the body
  // unread sends an RST, which could destroy this answer before the client read it.)
  return false;
}

bool HttpServer::Impl::authorized(const httplib::Request& req, httplib::Response& res) const {
  if (config.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return true;
  if (req.get_header_value("Authorization") == "Bearer " + config.api_key) return true;
  send_error(res, api_error(401, "authentication_error",
                            "incorrect or missing API key: send the header 'Authorization: Bearer KEY' with the key "
                            "the server was started with (--api-key)",
                            "invalid_api_key"));
  return false;
}

bool HttpServer::Impl::check_model(const std::string& model, httplib::Response& res) const {
  if (model.empty() || model == config.served_model_name) return true;
  ApiError e = api_error(404, "not_found_error",
                         "the model '" + model + "' does not exist; this server serves '" + config.served_model_name +
                             "' (GET /v1/models)",
                         "model_not_found");
  e.param = "model";
  send_error(res, e);
  return false;
}

void HttpServer::Impl::routes() {
  http.new_task_queue = [n = config.http_threads] { return new ConnectionThreads(static_cast<size_t>(n)); };
  http.set_payload_max_length(static_cast<size_t>(config.max_body_bytes));
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    return content_length_ok(req, res) && authorized(req, res) ? httplib::Server::HandlerResponse::Unhandled
                                                               : httplib::Server::HandlerResponse::Handled;
  });
  // Errors cpp-httplib produces itself (no route, unreadable headers) become OpenAI errors.
  http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404)
      send_error(res, api_error(404, "not_found_error", "no such endpoint: " + req.method + " " + req.path));
    else if (res.status == 400 && req.method == "POST" && !req.has_header("Content-Length") &&
             !req.has_header("Transfer-Encoding"))
      // The request line or headers could not be read, e.g. a header line too long (read_body words the body's
      // failures).
      send_error(res, api_error(400, "invalid_request_error",
                                "the request line or headers could not be read (an HTTP/1.1 request line, and each "
                                "header line at most " +
                                    std::to_string(CPPHTTPLIB_HEADER_MAX_LENGTH) + " bytes)"));
    else
      send_error(res, api_error(res.status, "invalid_request_error", "the request could not be read (HTTP " +
                                                                         std::to_string(res.status) + ")"));
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, api_error(500, "server_error", "internal error: " + what));
  });

  post("/v1/completions", [this](const auto& req, const auto& body, auto& res) { generate(req, body, res, false); });
  post("/v1/chat/completions", [this](const auto& req, const auto& body, auto& res) { generate(req, body, res, true); });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json model = {{"id", config.served_model_name}, {"object", "model"},     {"created", created},
                  {"owned_by", "kvshare"},         {"root", engine->config().model_path},
                  {"max_model_len", max_model_len}};
    send_json(res, json{{"object", "list"}, {"data", json::array({model})}});
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (stopping) return send_error(res, api_error(503, "server_error", "the server is shutting down"));
    res.status = 200;
  });
  http.Get("/version", [](const httplib::Request&, httplib::Response& res) {
    send_json(res, json{{"version", "0.1.0"}});
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(loop->metrics(), config.served_model_name), "text/plain; version=0.0.4");
  });
  post("/tokenize", [this](const auto&, const auto& body, auto& res) { tokenize(body, res); });
  post("/detokenize", [this](const auto&, const auto& body, auto& res) { detokenize(body, res); });
  post("/reset_prefix_cache", [this](const auto&, const auto&, auto& res) {
    int64_t dropped = 0;
    loop->call([&](Engine& e) { dropped = e.reset_prefix_cache(); });
    send_json(res, json{{"dropped_blocks", dropped}});
  });
  // Any other path: its body is read as a known path's is (within --max-body-bytes), then 404.
  const auto no_such_endpoint = [this](const httplib::Request& req, httplib::Response& res,
                                       const httplib::ContentReader& read) {
    std::string body;
    if (read_body(req, read, res, body)) res.status = 404;  // the error handler words it
  };
  http.Post(".*", no_such_endpoint);
  http.Put(".*", no_such_endpoint);
  http.Patch(".*", no_such_endpoint);
  http.Delete(".*", no_such_endpoint);
}

// Every body is read through here. cpp-httplib's own reading holds a body to --max-body-bytes by its
// Content-Length only: a chunked body, or a compressed one (Content-Encoding gzip, deflate or br, which it
// inflates), was read whole, whatever its size (32 MiB of gzip inflate to 32 GiB). A content reader sees the bytes
// as they arrive, inflated, and stops them at the limit.
void HttpServer::Impl::post(const std::string& path, PostHandler handler) {
  http.Post(path, [this, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res,
                                                       const httplib::ContentReader& read) {
    std::string body;
    if (read_body(req, read, res, body)) handler(req, body, res);
  });
}

bool HttpServer::Impl::read_body(const httplib::Request& req, const httplib::ContentReader& read,
                                 httplib::Response& res, std::string& body) const {
  const auto limit = static_cast<size_t>(config.max_body_bytes);
  size_t dropped = 0;
  const auto receive = [&](const char* data, size_t n) {
    if (dropped == 0 && n <= limit - body.size()) {
      body.append(data, n);
      return true;
    }
    // Over the limit: what follows is read and dropped, up to another `limit` bytes, so that the connection can
    // end cleanly after the answer (closed with unread data, a socket sends a reset, which can destroy the
    // answer before the client reads it); a body longer still ends the connection.
    dropped += n;
    body.clear();
    return dropped <= limit;
  };
  // A multipart/form-data body (curl -F) goes through cpp-httplib's multipart reader (the plain one threw
  // bad_function_call for it: a 500), to its end, so that the connection's next request starts where it does (left
  // unread, a body past the first 4 KiB was read as further requests); then it is refused.
  const bool multipart = req.is_multipart_form_data();
  const bool read_all = multipart ? read([](const httplib::MultipartFormData&) { return true; }, receive) : read(receive);
  if (dropped > 0 || res.status == 413) {  // 413: a Content-Length over the limit, skipped by cpp-httplib
    send_error(res, api_error(413, "invalid_request_error",
                              "the request body is larger than " + std::to_string(config.max_body_bytes) +
                                  " bytes (--max-body-bytes)"));
    return false;
  }
  if (!read_all) {
    // A client that stopped sending before the end of its body (a Content-Length it did not keep, a chunked body
    // without its last chunk), a malformed chunked encoding (cpp-httplib 0.11 also takes no chunk trailers), or a
    // Content-Encoding the body does not follow.
    send_error(res, api_error(400, "invalid_request_error",
                              "the request body could not be read whole: it ended before its Content-Length or last "
                              "chunk, its chunked encoding is malformed (trailers are not supported), or it does not "
                              "follow its Content-Encoding (gzip, deflate, br)"));
    return false;
  }
  if (multipart) {
    send_error(res, api_error(400, "invalid_request_error",
                              "the request body must be JSON (Content-Type: application/json), not multipart/form-data"));
    return false;
  }
  return true;
}

Result<std::string> HttpServer::Impl::render_chat(const GenerationCall& call) const {
  if (!chat_templates)
    return invalid_argument("this model has no chat template (" + chat_template_problem +
                            "); start the server with --chat-template FILE, or use /v1/completions");
  // The template's variables as Hugging Face's apply_chat_template (and vLLM) set them: tools and documents
  // when given, then chat_template_kwargs, which may override them, then the messages.
  nlohmann::ordered_json conversation = json::object();
  if (!call.tools.is_null()) conversation["tools"] = call.tools;
  if (!call.documents.is_null()) conversation["documents"] = call.documents;
  if (call.chat_template_kwargs.is_object())
    for (const auto& [key, value] : call.chat_template_kwargs.items()) conversation[key] = value;
  conversation["messages"] = call.messages;
  jinja::RenderOptions render_options;
  render_options.cancel = &stopping;  // shutdown does not wait for a long render
  // The model's "tool_use" template for a request with tools, where it lists one (as transformers and vLLM pick).
  KV_ASSIGN_OR_RETURN(const ChatTemplate* chat_template, chat_templates->pick("", !call.tools.is_null()));
  KV_ASSIGN_OR_RETURN(std::string text, chat_template->apply(conversation, call.add_generation_prompt, render_options,
                                                                   /*tool_arguments_as_objects=*/true));
  if (call.continue_final_message) return cut_after_final_message(std::move(text), conversation);
  return text;
}

// Turns every prompt into token ids: chat messages through the template, text through the tokenizer.
bool HttpServer::Impl::prepare_prompts(GenerationCall& call, ApiError& error) const {
  const bool truncating = call.params.truncate_prompt_tokens.has_value();
  auto refused = [&](const Status& st) {
    if (st.ok()) return false;
    error = from_status(st);  // 400 context_length_exceeded
    error.param = call.chat ? "messages" : "prompt";
    return true;
  };
  if (call.chat) {
    Result<std::string> text = render_chat(call);
    if (!text.ok()) {
      error = bad_request(text.status().message(), "messages");
      return false;
    }
    if (far_too_long(*text, "messages", error, truncating)) return false;
    // The template writes the special tokens it wants (BOS included): none are added unless add_special_tokens.
    call.prompts = {PromptInput{false, *text, tokenizer().encode(*text, call.add_special_tokens)}};
  } else {
    for (PromptInput& p : call.prompts) {
      if (!p.is_text) continue;
      if (far_too_long(p.text, "prompt", error, truncating)) return false;
      p.token_ids = tokenizer().encode(p.text, call.add_special_tokens);
    }
  }
  for (PromptInput& p : call.prompts) {
    // Text encoded with the tokenizer's BOS keeps it first.
    const int32_t bos = tokenizer_adds_bos(call, p) ? tokenizer().bos_id() : -1;
    if (const Status st = truncate_prompt(p.token_ids, call.params.truncate_prompt_tokens, max_model_len, bos, &p.truncated);
        !st.ok()) {
      error = from_status(st);
      error.param = "truncate_prompt_tokens";
      return false;
    }
    if (p.token_ids.empty() && tokenizer().bos_id() < 0) {
      error = bad_request("the prompt is empty and the model has no BOS token to start from", "prompt");
      return false;
    }
    // An empty prompt starts from BOS alone, also with add_special_tokens false (the engine would encode "" with
    // its defaults, an EOS too where the tokenizer adds one).
    if (p.token_ids.empty()) p.token_ids = {tokenizer().bos_id()};
    const auto len = static_cast<int64_t>(p.token_ids.size());
    if (refused(check_prompt_length(len, max_model_len, context_can_grow))) return false;
    // A max_tokens past the context's end is an error, as OpenAI's and vLLM's servers answer it (it was cut
    // silently to what fit). Chat without a limit may fill the context, as theirs do.
    if (call.max_tokens_given && len + call.params.max_tokens > max_model_len) {
      error = api_error(400, "invalid_request_error",
                        "this request asks for " + std::to_string(len + call.params.max_tokens) + " tokens (" +
                            std::to_string(len) + " in the prompt, " + std::to_string(call.params.max_tokens) +
                            " to generate) but the model's context holds " + std::to_string(max_model_len) +
                            "; lower max_tokens to " + std::to_string(max_model_len - len) +
                            " or less, or shorten the prompt",
                        "context_length_exceeded");
      error.param = "max_tokens";
      return false;
    }
    // Chat without a limit may fill the context, as OpenAI's and vLLM's do, or the whole KV cache where that is
    // smaller (the engine refuses a request that could never fit it; the client did not ask for that many).
    if (call.chat && !call.max_tokens_given)
      call.params.max_tokens = static_cast<int32_t>(std::max<int64_t>(1, std::min(max_model_len, kv_cache_tokens) - len));
  }
  return true;
}

// A request whose sequences alone are more than may wait could never be admitted: 400, not 503 (a retry
// cannot succeed). One sequence always passes, so that --max-waiting-requests 0 keeps refusing all with 503.
bool HttpServer::Impl::admissible_alone(const GenerationCall& call, int64_t prompts, int64_t sequences,
                                        ApiError& error) const {
  if (sequences <= 1 || sequences <= config.max_waiting_requests) return true;
  const bool best_of = call.best_of();
  std::string asks = std::to_string(prompts) + (prompts == 1 ? " prompt" : " prompts") +
                     " × " + (best_of ? "best_of " : "n ") + std::to_string(call.params.n);
  error = bad_request("this request asks for " + std::to_string(sequences) + " sequences (" + asks +
                          ") but at most " + std::to_string(config.max_waiting_requests) +
                          " may wait at once (--max-waiting-requests); split it into smaller requests",
                      call.params.n > 1 ? (best_of ? "best_of" : "n") : "prompt");
  return false;
}

void HttpServer::Impl::generate(const httplib::Request& req, const std::string& body, httplib::Response& res,
                                bool chat) {
  ++open_calls;
  struct Leave {
    std::atomic<int>& count;
    ~Leave() { --count; }
  } leave{open_calls};
  // cpp-httplib reads the client's address (getpeername) as it starts on a request. It has none when the client
  // had already reset the connection (RST, e.g. a client killed with its request unanswered): nobody will read
  // the answer, so none is computed.
  if (req.remote_port < 0) {
    res.status = 499;
    return;
  }
  auto call = std::make_shared<Call>();
  ApiError error;
  if (!parse_generation_call(body, chat, call->api, error)) return send_error(res, error);
  if (!check_model(call->api.model, res)) return;
  // <tool_call> is a special token in some hermes models' vocabularies (Hermes 2 Pro): kept in the text, where the
  // parser looks for it, as vLLM keeps it.
  if (config.tool_call_parser == ToolCallParser::kHermes && call->api.tool_choice == GenerationCall::ToolChoice::kAuto)
    call->api.params.skip_special_tokens = false;
  // The queue limit counts sequences, not calls: 1000 prompts with n 128 are 128,000 sequences, which took
  // the queue far beyond its limit and had every other client refused until they were done. A chat is one
  // prompt (its messages become one when rendered; counted as none before, chats passed every queue limit).
  const int64_t prompts = chat ? 1 : static_cast<int64_t>(call->api.prompts.size());
  const int64_t sequences = prompts * call->n();
  if (!admissible_alone(call->api, prompts, sequences, error)) return send_error(res, error);
  // Refused before the prompts are rendered and tokenized, which an overloaded server need not pay for.
  if (stopping) return send_error(res, api_error(503, "server_error", "the server is shutting down"));
  if (const int64_t waiting = loop->num_waiting(); waiting + sequences > config.max_waiting_requests)
    return send_error(res, api_error(503, "server_error",
                                     "the server is overloaded: " + std::to_string(waiting) +
                                         " sequences are waiting and this request adds " + std::to_string(sequences) +
                                         " (--max-waiting-requests " + std::to_string(config.max_waiting_requests) +
                                         "); retry later"));
  if (!prepare_prompts(call->api, error)) return send_error(res, error);

  call->ctx.id = new_id(chat ? "chatcmpl-" : "cmpl-");
  call->ctx.created = std::time(nullptr);
  call->ctx.model = config.served_model_name;
  call->ctx.token_piece = [this](int32_t id) { return tokenizer().token_piece(id); };
  call->ctx.tool_parser = config.tool_call_parser;
  call->notifier = std::make_shared<Notifier>(call->api.stream);
  std::vector<Request> requests;
  for (const PromptInput& p : call->api.prompts) {
    Request& r = requests.emplace_back();
    r.prompt_token_ids = p.token_ids;  // never empty: an empty prompt is BOS alone
    r.params = call->api.params;
    r.cache_salt = call->api.cache_salt;
  }
  EngineLoop::Submitted submitted = loop->submit(std::move(requests), call->notifier);  // all or none
  if (!submitted.refusal.ok()) {
    const Status& refusal = submitted.refusal;
    ApiError e = from_status(refusal);
    // The engine's refusal of a constraint (for this vocabulary, or a schema it cannot follow) begins "choice",
    // "JSON mode" or "json_schema".
    const std::string& m = refusal.message();
    if (e.status == 400 && !call->api.constraint_field.empty() &&
        (m.starts_with("choice") || m.starts_with("JSON mode") || m.starts_with("json_schema")))
      e.param = call->api.constraint_field;
    if (call->api.prompts.size() > 1 && e.status == 400)
      e.message = "prompt " + std::to_string(submitted.refused) + ": " + e.message;
    return send_error(res, e);
  }
  call->streams = std::move(submitted.streams);
  const int32_t n = call->n();
  for (size_t i = 0; i < call->api.prompts.size(); ++i) {
    const PromptInput& p = call->api.prompts[i];
    call->prompt_tokens.push_back(static_cast<int64_t>(p.token_ids.size()));
    std::vector<ChoiceState> states(n);
    for (int32_t j = 0; j < n; ++j) {
      states[j].index = static_cast<int32_t>(i) * n + j;
      if (call->api.echo) states[j].echo_text = echo_text(call->api, p);
    }
    call->states.push_back(std::move(states));
  }
  call->socket = find_connection_socket(req);
  if (call->api.stream) stream(call, res);
  else respond_when_done(call, res);
}

void HttpServer::Impl::respond_when_done(const std::shared_ptr<Call>& call, httplib::Response& res) {
  std::vector<std::vector<Output>> outputs;
  while (!call->collect(outputs)) {
    call->notifier->wait(call->seen, kPollInterval);
    if (connection_closed(call->socket)) {  // nobody is waiting for the answer any more
      abort_call(*call);
      res.status = 499;
      return;
    }
  }
  const Usage usage = call->usage(outputs);  // best_of: every completion's tokens count
  std::vector<std::pair<ChoiceState, Output>> choices;
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::vector<std::pair<ChoiceState, Output>> prompt_choices;
    for (Output& o : outputs[i]) {
      if (o.finish_reason == FinishReason::kError) {
        abort_call(*call);
        return send_error(res, from_status(o.error));
      }
      prompt_choices.emplace_back(std::move(call->states[i][o.index]), std::move(o));
    }
    if (call->api.best_of()) keep_best(prompt_choices, call->api.n, static_cast<int32_t>(i));
    for (auto& c : prompt_choices) choices.push_back(std::move(c));
  }
  send_json(res, completion_response(call->ctx, call->api, choices, usage));
}

void HttpServer::Impl::stream(const std::shared_ptr<Call>& call, httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  ++open_streams;
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, call](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& event) {
          const std::string line = "data: " + dump(event) + "\n\n";
          return sink.write(line.data(), line.size());
        };
        call->notifier->wait(call->seen, kPollInterval);
        if (connection_closed(call->socket)) return false;
        std::vector<std::vector<Output>> outputs;
        const bool all_finished = call->collect(outputs);
        for (size_t i = 0; i < outputs.size(); ++i)
          for (const Output& o : outputs[i]) {
            if (o.finish_reason == FinishReason::kError && !call->states[i][o.index].finished) {
              if (!send(from_status(o.error).to_json())) return false;
            }
            json chunk = stream_chunk(call->ctx, call->api, call->states[i][o.index], o);
            if (chunk.is_null()) continue;
            if (call->api.include_usage && call->api.continuous_usage)  // vLLM's: this choice's so far
              chunk["usage"] = Usage{call->prompt_tokens[i], static_cast<int64_t>(o.token_ids.size()),
                                     outputs[i][0].num_cached_tokens}.to_json();  // the prompt's, as the last
            if (!send(chunk)) return false;
          }
        if (!all_finished) return true;
        if (call->api.include_usage && !send(usage_chunk(call->ctx, call->api, call->usage(outputs)))) return false;
        static const std::string kDone = "data: [DONE]\n\n";
        if (!sink.write(kDone.data(), kDone.size())) return false;
        call->finished = true;
        sink.done();
        return true;
      },
      // The stream ended early (the client hung up, a write failed): stop the engine's work for it.
      [this, call](bool) {
        if (!call->finished) abort_call(*call);
        --open_streams;
      });
}

void HttpServer::Impl::tokenize(const std::string& text, httplib::Response& res) {
  json body;
  ApiError error;
  if (!parse_json_object(text, body, error)) return send_error(res, error);
  if (body.contains("model") && body["model"].is_string() && !check_model(body["model"].get<std::string>(), res))
    return;
  std::vector<int32_t> tokens;
  if (body.contains("messages")) {
    GenerationCall call;
    if (!parse_generation_call(text, /*chat=*/true, call, error)) return send_error(res, error);
    Result<std::string> rendered = render_chat(call);
    if (!rendered.ok()) return send_error(res, bad_request(rendered.status().message(), "messages"));
    if (far_too_long(*rendered, "messages", error)) return send_error(res, error);
    tokens = tokenizer().encode(*rendered, call.add_special_tokens);  // as the chat endpoint encodes it
  } else {
    auto prompt = body.find("prompt");
    if (prompt == body.end() || !prompt->is_string())
      return send_error(res, bad_request("/tokenize needs \"prompt\" (a string) or \"messages\"", "prompt"));
    bool add_special = true;
    if (auto a = body.find("add_special_tokens"); a != body.end() && !a->is_null()) {
      if (!a->is_boolean()) return send_error(res, bad_request("add_special_tokens must be true or false",
                                                              "add_special_tokens"));
      add_special = a->get<bool>();
    }
    if (far_too_long(prompt->get_ref<const std::string&>(), "prompt", error)) return send_error(res, error);
    tokens = tokenizer().encode(prompt->get<std::string>(), add_special);
  }
  send_json(res, json{{"tokens", tokens}, {"count", tokens.size()}, {"max_model_len", max_model_len}});
}

void HttpServer::Impl::detokenize(const std::string& text, httplib::Response& res) {
  json body;
  ApiError error;
  if (!parse_json_object(text, body, error)) return send_error(res, error);
  auto tokens = body.find("tokens");
  if (tokens == body.end() || !tokens->is_array())
    return send_error(res, bad_request("/detokenize needs \"tokens\": a list of token ids", "tokens"));
  std::vector<int32_t> ids;
  for (const json& t : *tokens) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tokenizer().vocab_size())
      return send_error(res, bad_request("tokens must be token ids in [0, " + std::to_string(tokenizer().vocab_size()) +
                                             "), got " + t.dump(),
                                         "tokens"));
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  send_json(res, json{{"prompt", tokenizer().decode(ids)}});
}

}  // namespace kvshare::server

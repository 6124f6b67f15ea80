#include "server/http_server.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/mapped_file.h"
#include "server/server_test_util.h"
#include "test_util.h"

namespace kvshare::server {
namespace {

constexpr const char* kModel = testing::kTinyModel;

std::unique_ptr<HttpServer> make_server() {
  auto engine = testing::make_tiny_engine();
  if (engine == nullptr) return nullptr;
  ServerConfig sc;
  sc.port = 0;
  auto server = HttpServer::create(std::move(engine), sc);
  EXPECT_TRUE(server.ok()) << server.status().to_string();
  return server.ok() ? std::move(server).value() : nullptr;
}

// This process's listening TCP socket on `port`, or -1.
int listening_socket(int port) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    const int fd = std::atoi(e->d_name);
    if (e->d_name[0] == '.' || fd == dirfd(dir)) continue;
    int listening = 0;
    socklen_t len = sizeof listening;
    sockaddr_in addr{};
    socklen_t alen = sizeof addr;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening == 1 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &alen) == 0 && addr.sin_family == AF_INET &&
        ntohs(addr.sin_port) == port)
      found = fd;
  }
  closedir(dir);
  return found;
}

// A burst of clients connecting at once is queued by the kernel until the server accepts them. cpp-httplib's own
// queue of 5 overflowed under 32 SDK clients: the kernel dropped SYNs or answered with SYN cookies, and a client
// saw its connection reset ("Connection error.").
TEST(HttpServer, ABurstOfConnectionsIsQueuedUntilAccepted) {
  KV_REQUIRE_SHARED(kModel);
  auto server = make_server();
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(server->bind().ok());
  const int fd = listening_socket(server->port());
  ASSERT_GE(fd, 0) << "no listening socket on port " << server->port();
  // For a listening socket, Linux reports the accept queue's limit in tcpi_sacked (its length in tcpi_unacked). The
  // kernel caps it at net.core.somaxconn (4096 by default since Linux 5.4).
  unsigned somaxconn = 4096;
  if (FILE* f = std::fopen("/proc/sys/net/core/somaxconn", "r")) {
    if (std::fscanf(f, "%u", &somaxconn) != 1) somaxconn = 4096;
    std::fclose(f);
  }
  const unsigned expected = std::min(512u, somaxconn);
  tcp_info info{};
  socklen_t len = sizeof info;
  ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len), 0) << std::strerror(errno);
  EXPECT_GE(info.tcpi_sacked, expected) << "the listening socket queues only " << info.tcpi_sacked << " connections";

  // Clients connect and send their request before the server accepts any; then it runs and answers each.
  const int kClients = static_cast<int>(std::min(200u, expected));
  std::vector<int> clients;
  const std::string request = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  for (int i = 0; i < kClients; ++i) {
    const int c = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(c, 0);
    timeval timeout{10, 0};  // connect (SO_SNDTIMEO) and each read give up after 10 s
    setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server->port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
    ASSERT_EQ(send(c, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
    clients.push_back(c);
  }
  std::thread run([&] { server->run(); });
  int answered = 0;
  for (const int c : clients) {
    std::string reply;
    char buf[4096];
    ssize_t n = 0;
    while ((n = recv(c, buf, sizeof buf, 0)) > 0) reply.append(buf, static_cast<size_t>(n));
    if (reply.rfind("HTTP/1.1 200", 0) == 0) ++answered;
    close(c);
  }
  server->stop();
  run.join();
  EXPECT_EQ(answered, kClients);
}

// A stop that comes before run() has started listening (a SIGTERM right after start-up) must still end run():
// cpp-httplib's own stop() does nothing then, and run() listened for ever.
TEST(HttpServer, AStopBeforeRunStillEndsRun) {
  KV_REQUIRE_SHARED(kModel);
  auto server = make_server();
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(server->bind().ok());
  server->stop();
  std::atomic<bool> returned{false};
  std::thread run([&] {
    server->run();
    returned = true;
  });
  for (int i = 0; i < 500 && !returned; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(returned) << "run() did not return after an earlier stop()";
  if (!returned) {  // unblock it, so that the test ends
    const int fd = listening_socket(server->port());
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
  }
  run.join();
}

// A second server on a port that one is listening on must fail to bind, not share the port (SO_REUSEPORT made
// the two take turns answering).
TEST(HttpServer, ASecondServerCannotTakeAPortInUse) {
  KV_REQUIRE_SHARED(kModel);
  auto first = make_server();
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(first->bind().ok());
  auto engine = testing::make_tiny_engine();
  ASSERT_NE(engine, nullptr);
  ServerConfig sc;
  sc.port = first->port();
  auto second = HttpServer::create(std::move(engine), sc);
  ASSERT_TRUE(second.ok()) << second.status().to_string();
  const Status st = (*second)->bind();
  ASSERT_FALSE(st.ok()) << "a second server bound port " << first->port();
  EXPECT_NE(st.message().find("is the port in use"), std::string::npos) << st.to_string();
}

}  // namespace
}  // namespace kvshare::server

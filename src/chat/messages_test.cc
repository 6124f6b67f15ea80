// Chat messages as requests give them, made ready for a template.
#include "chat/messages.h"

#include <gtest/gtest.h>

namespace kvshare {
namespace {

using nlohmann::ordered_json;

ordered_json read(const std::string& given) {
  ordered_json messages;
  std::string error;
  EXPECT_TRUE(read_chat_messages(ordered_json::parse(given), messages, error)) << error;
  return messages;
}

TEST(ChatMessages, PartsAreJoinedAndErrorsNameTheMessage) {
  EXPECT_EQ(read(R"([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])")
                [0]["content"], "a\nb");
  ordered_json messages;
  std::string error;
  EXPECT_FALSE(read_chat_messages(ordered_json::parse(R"([{"role": "user"}, {"content": "x"}])"), messages, error));
  EXPECT_EQ(error, "messages[1].role must be a string");
}

}  // namespace
}  // namespace kvshare

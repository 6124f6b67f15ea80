// The CLI's commands. Each parses its own flags and returns the process exit code: 0 on success,
// 1 when the work failed or a value is wrong (the message on stderr says which), 2 when the command line
// cannot be parsed (an unknown command or flag, a flag without its value).
#pragma once

#include <string>
#include <vector>

namespace kvshare::cli {

int run_generate(const std::vector<std::string>& args);
int run_tokenize(const std::vector<std::string>& args);
int run_make_model(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);
int run_chat_template(const std::vector<std::string>& args);
int run_serve(const std::vector<std::string>& args);

}  // namespace kvshare::cli

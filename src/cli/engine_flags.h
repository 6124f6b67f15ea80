// Flags every engine-running command shares (generate, bench, serve), and the EngineConfig they make.
#pragma once

#include <vector>

#include "cli/args.h"
#include "kvshare/engine.h"

namespace kvshare::cli {

std::vector<FlagSpec> engine_flag_specs();
Result<EngineConfig> engine_config_from(const Args& args);
// Sampling flags (--max-tokens, --temperature, --top-k, --top-p, --seed, --ignore-eos) as request defaults.
std::vector<FlagSpec> sampling_flag_specs();
Result<SamplingParams> sampling_params_from(const Args& args);

// A message for stderr as it reads: control characters other than newline and tab written as escapes (\0, \x1b),
// so that a NUL inside a name a file gave ends nothing early and an escape sequence reaches no terminal.
std::string printable(const std::string& message);
// Prints "kvshare COMMAND: message" (printable) to stderr and returns 1: the work failed or a value was wrong.
int fail(const std::string& command, const Status& status);
// The same for a command line that cannot be parsed (unknown flag, a flag without its value): returns 2.
int usage_error(const std::string& command, const Status& status);

}  // namespace kvshare::cli

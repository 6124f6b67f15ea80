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

// Prints "kvshare COMMAND: message" to stderr and returns 1: the work failed or a value was wrong.
int fail(const std::string& command, const Status& status);
// The same for a command line that cannot be parsed (unknown flag, a flag without its value): returns 2.
int usage_error(const std::string& command, const Status& status);

}  // namespace kvshare::cli

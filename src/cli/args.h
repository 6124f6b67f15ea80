// A small command-line flag parser: `--name value`, `--name=value` and boolean `--flag`, checked against
// the flags a command declares, so an unknown or malformed flag is an error that names it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kvshare/status.h"

namespace kvshare::cli {

struct FlagSpec {
  std::string name;  // without dashes
  bool takes_value;
  std::string help;
  bool repeatable = false;  // may be given more than once (get_all); any other flag given twice is an error
};

class Args {
 public:
  // Parses argv after the command name. Positional arguments are kept in order.
  static Result<Args> parse(const std::string& command, const std::vector<FlagSpec>& specs,
                            const std::vector<std::string>& argv);

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::optional<std::string> get(const std::string& name) const;  // a repeatable flag's last value
  std::vector<std::string> get_all(const std::string& name) const;  // every value, in order
  std::string get_or(const std::string& name, const std::string& fallback) const;
  Result<int64_t> get_int(const std::string& name, int64_t fallback) const;
  Result<double> get_double(const std::string& name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::string command_;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

std::string usage(const std::string& command, const std::string& summary, const std::vector<FlagSpec>& specs);

// "2GiB", "512MiB", "1.5G", "1000000" (bytes) -> bytes; "0.3" (a fraction of available memory) -> negative
// numbers are rejected. Returns {bytes, fraction}: exactly one is set.
struct MemorySize {
  int64_t bytes = 0;
  double fraction = 0;
};
Result<MemorySize> parse_memory_size(const std::string& text);

}  // namespace kvshare::cli

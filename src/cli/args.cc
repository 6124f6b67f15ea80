#include "cli/args.h"

#include <cmath>
#include <cstdlib>

namespace kvshare::cli {

Result<Args> Args::parse(const std::string& command, const std::vector<FlagSpec>& specs,
                         const std::vector<std::string>& argv) {
  Args a;
  a.command_ = command;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (arg.size() < 3 || arg.rfind("--", 0) != 0) {
      a.positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    bool has_inline = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_inline = true;
    }
    const FlagSpec* spec = nullptr;
    for (const FlagSpec& s : specs)
      if (s.name == name) spec = &s;
    if (spec == nullptr)
      return invalid_argument("unknown flag --" + name + " for 'kvshare " + command + "'; see 'kvshare " + command +
                              " --help'");
    if (spec->takes_value && !has_inline) {
      if (i + 1 >= argv.size()) return invalid_argument("flag --" + name + " needs a value");
      value = argv[++i];
    } else if (!spec->takes_value && has_inline) {
      return invalid_argument("flag --" + name + " takes no value");
    }
    if (a.values_.count(name) != 0 && !spec->repeatable)
      return invalid_argument("flag --" + name + " is given twice; give it once");
    a.values_[name].push_back(value);
  }
  return a;
}

std::optional<std::string> Args::get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> Args::get_all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

std::string Args::get_or(const std::string& name, const std::string& fallback) const {
  return get(name).value_or(fallback);
}

Result<int64_t> Args::get_int(const std::string& name, int64_t fallback) const {
  auto v = get(name);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno != 0)
    return invalid_argument("--" + name + " must be a whole number, got '" + *v + "'");
  return static_cast<int64_t>(x);
}

Result<double> Args::get_double(const std::string& name, double fallback) const {
  auto v = get(name);
  if (!v) return fallback;
  char* end = nullptr;
  const double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || !std::isfinite(x))
    return invalid_argument("--" + name + " must be a number, got '" + *v + "'");
  return x;
}

std::string usage(const std::string& command, const std::string& summary, const std::vector<FlagSpec>& specs) {
  std::string s = "usage: kvshare " + command + " [flags]\n" + summary + "\n\nflags:\n";
  for (const FlagSpec& f : specs) {
    std::string left = "  --" + f.name + (f.takes_value ? " VALUE" : "");
    if (left.size() < 30) left.resize(30, ' ');
    s += left + " " + f.help + "\n";
  }
  return s;
}

Result<MemorySize> parse_memory_size(const std::string& text) {
  char* end = nullptr;
  const double x = std::strtod(text.c_str(), &end);
  if (text.empty() || end == text.c_str() || !std::isfinite(x) || x <= 0)
    return invalid_argument("--kv-cache-memory must be a size like 2GiB or 512MiB, or a fraction like 0.3; got '" +
                            text + "'");
  std::string unit(end);
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double mult = 0;
  if (unit.empty()) {
    // A number with a decimal point ("0.3", "1.0") is a fraction, which must be below 1 ("1.5" was 1 byte);
    // one without is a number of bytes.
    if (x < 1 || text.find('.') != std::string::npos) {
      if (x < 1) return MemorySize{0, x};
      return invalid_argument("--kv-cache-memory " + text + " is neither a size (2GiB, 512MiB, a whole number of "
                              "bytes) nor a fraction of free memory below 1 (0.3)");
    }
    mult = 1;
  } else if (unit == "k" || unit == "kb" || unit == "kib") {
    mult = 1024;
  } else if (unit == "m" || unit == "mb" || unit == "mib") {
    mult = 1024.0 * 1024;
  } else if (unit == "g" || unit == "gb" || unit == "gib") {
    mult = 1024.0 * 1024 * 1024;
  } else {
    return invalid_argument("--kv-cache-memory: unknown unit '" + unit + "' (use KiB, MiB or GiB)");
  }
  if (x * mult >= 0x1p62) return invalid_argument("--kv-cache-memory '" + text + "' is too large");
  return MemorySize{static_cast<int64_t>(x * mult), 0};
}

}  // namespace kvshare::cli

// A number as error messages and listings print it: nine significant digits, enough to read any float back
// exactly ("-1", "1e-05", "0.899999976", "2000000", "inf", "nan"). The one formatter for messages about numbers.
#pragma once

#include <cstdio>
#include <string>

namespace kvshare {

inline std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace kvshare

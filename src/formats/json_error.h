// Where and why a JSON text does not parse, for error messages: every reader that refuses a text as "not valid
// JSON" says where, as the tokenizer's own parser does ("at line 1, column 14: syntax error while parsing object -
// unexpected end of input; expected '}'").
#pragma once

#include <string>
#include <string_view>

namespace kvshare {

// " at line L, column C: reason" for a text that is not valid JSON (to append to "... is not valid JSON"), "" for
// one that is. Parses `text` again, so call it on the error path only, after check_json_limits.
std::string json_syntax_error(std::string_view text);

}  // namespace kvshare

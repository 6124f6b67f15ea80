#include "tokenizer/regex_splitter.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "tokenizer/utf8.h"

namespace kvshare {

struct RegexSplitter::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

Result<RegexSplitter> RegexSplitter::create(const std::string& pattern, bool literal, SplitBehavior behavior,
                                            bool invert) {
  uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
  options |= literal ? PCRE2_LITERAL : PCRE2_UCP;  // PCRE2 refuses UCP with LITERAL (it would mean nothing)
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                                   &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return invalid_argument("pre-tokenizer regex does not compile at offset " + std::to_string(error_offset) +
                            ": " + reinterpret_cast<const char*>(message) + " (pattern: " + pattern + ")");
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // if JIT is unavailable the interpreter is used
  auto compiled = std::make_shared<Compiled>();
  compiled->code = code;
  RegexSplitter splitter;
  splitter.regex_ = std::move(compiled);
  splitter.pattern_ = pattern;
  splitter.literal_ = literal;
  splitter.behavior_ = behavior;
  splitter.invert_ = invert;
  return splitter;
}

void RegexSplitter::split(std::string_view text, std::vector<std::string_view>& out) const {
  // Spans of the text, each a delimiter (a match, or a gap when inverted) or not.
  struct Span {
    size_t begin, end;
    bool delimiter;
  };
  std::vector<Span> spans;
  pcre2_match_data* match = pcre2_match_data_create(1, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0, last_end = 0;
  while (pos <= text.size()) {
    const int rc = pcre2_match(regex_->code, subject, text.size(), pos, 0, match, nullptr);
    if (rc < 0) break;  // no more matches (or a matching error, treated as no match)
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
    const size_t begin = ov[0], end = ov[1];
    if (end == begin) {  // an empty match: step over one character
      if (begin >= text.size()) break;
      pos = begin + std::max<size_t>(1, scan_utf8_char(text, begin).length);
      continue;
    }
    if (begin > last_end) spans.push_back({last_end, begin, invert_});
    spans.push_back({begin, end, !invert_});
    last_end = pos = end;
  }
  pcre2_match_data_free(match);
  if (last_end < text.size()) spans.push_back({last_end, text.size(), invert_});

  // Turns spans into pieces by the behaviour; `pending` is a piece still open for merging.
  size_t piece_begin = 0, piece_end = 0;
  bool open = false;
  auto close = [&] {
    if (open && piece_end > piece_begin) out.push_back(text.substr(piece_begin, piece_end - piece_begin));
    open = false;
  };
  bool previous_was_delimiter = false;
  for (const Span& s : spans) {
    switch (behavior_) {
      case SplitBehavior::kIsolated:
        close();
        piece_begin = s.begin, piece_end = s.end, open = true;
        close();
        break;
      case SplitBehavior::kRemoved:
        if (!s.delimiter) {
          close();
          piece_begin = s.begin, piece_end = s.end, open = true;
          close();
        }
        break;
      case SplitBehavior::kMergedWithPrevious:
        if (s.delimiter && open) {
          piece_end = s.end;
          close();
        } else {
          close();
          piece_begin = s.begin, piece_end = s.end, open = true;
          if (s.delimiter) close();
        }
        break;
      case SplitBehavior::kMergedWithNext:
        if (!s.delimiter && open) {
          piece_end = s.end;
          close();
        } else {
          close();
          piece_begin = s.begin, piece_end = s.end, open = true;
          if (!s.delimiter) close();
        }
        break;
      case SplitBehavior::kContiguous:
        if (s.delimiter && previous_was_delimiter && open) {
          piece_end = s.end;
        } else {
          close();
          piece_begin = s.begin, piece_end = s.end, open = true;
        }
        break;
    }
    previous_was_delimiter = s.delimiter;
  }
  close();
}

}  // namespace kvshare

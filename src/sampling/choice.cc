#include "sampling/choice.h"

#include <algorithm>

namespace kvshare {

bool is_structured_output_option(std::string_view key) {
  return key == "disable_fallback" || key == "disable_any_whitespace" || key == "disable_additional_properties" ||
         key == "whitespace_pattern";
}

TokenTexts::TokenTexts(std::vector<std::string> texts, bool strip_first_space)
    : texts_(std::move(texts)), strip_first_space_(strip_first_space) {
  for (size_t id = 0; id < texts_.size(); ++id) {
    const std::string& t = texts_[id];
    if (t.empty()) continue;
    ids_[t].push_back(static_cast<int32_t>(id));
    max_length_ = std::max(max_length_, t.size());
  }
}

std::span<const int32_t> TokenTexts::ids_of(std::string_view bytes) const {
  const auto it = ids_.find(bytes);
  if (it == ids_.end()) return {};
  return it->second;
}

namespace {

// Calls f(k, ids) for every k in [1, rest.size()] whose first k bytes of `rest` some tokens add, with those
// tokens. First token of a completion whose first space is dropped: a token " " + rest[0, k) adds rest[0, k), and
// so does rest[0, k) itself unless it starts with a space (that one would lose it).
template <class F>
void for_each_prefix_token(const TokenTexts& vocab, std::string_view rest, bool first_drops_space, F&& f) {
  const size_t most = std::min(rest.size(), vocab.max_length());
  std::string spaced;
  for (size_t k = 1; k <= most; ++k) {
    const std::string_view piece = rest.substr(0, k);
    if (!first_drops_space || piece[0] != ' ') f(k, vocab.ids_of(piece));
    if (first_drops_space && k < vocab.max_length()) {
      spaced.assign(1, ' ');
      spaced.append(piece);
      f(k, vocab.ids_of(spaced));
    }
  }
}

}  // namespace

Result<ChoiceSet> ChoiceSet::make(const std::vector<std::string>& choices, const TokenTexts& vocab,
                                  bool strip_first_space) {
  ChoiceSet set;
  set.strip_first_space_ = strip_first_space && vocab.strip_first_space();
  set.choices_ = choices;
  std::sort(set.choices_.begin(), set.choices_.end());
  set.choices_.erase(std::unique(set.choices_.begin(), set.choices_.end()), set.choices_.end());
  for (const std::string& c : set.choices_) {
    // Backwards: the rest from i can be spelled when a token adds c[i, i + k) and the rest from i + k can be.
    std::vector<uint8_t> ok(c.size() + 1, 0);
    ok[c.size()] = 1;
    for (size_t i = c.size(); i-- > 0;) {
      for_each_prefix_token(vocab, std::string_view(c).substr(i), false, [&](size_t k, std::span<const int32_t> ids) {
        if (!ids.empty() && ok[i + k]) ok[i] = 1;
      });
    }
    // Some first token leads to a rest that can be spelled; where the first token drops its space, that may be
    // a token of one space alone, after which the choice is spelled from its start.
    bool first = set.strip_first_space_ && !vocab.ids_of(" ").empty() && ok[0];
    for_each_prefix_token(vocab, c, set.strip_first_space_, [&](size_t k, std::span<const int32_t> ids) {
      if (!ids.empty() && ok[k]) first = true;
    });
    if (!first)
      return invalid_argument("choice \"" + c + "\" cannot be spelled with this model's tokens (no sequence of them "
                              "writes exactly this text): change or drop it");
    set.spellable_.push_back(std::move(ok));
  }
  return set;
}

const std::vector<int32_t>& ChoiceSet::allowed(const TokenTexts& vocab, std::string_view so_far, bool at_start,
                                               std::span<const int32_t> end_ids) const {
  const auto same = [&](const Memo& m) {
    return m.at_start == at_start && m.so_far == so_far && std::equal(m.end_ids.begin(), m.end_ids.end(),
                                                                      end_ids.begin(), end_ids.end());
  };
  auto it = std::find_if(memo_.begin(), memo_.end(), same);
  if (it == memo_.end()) {
    if (memo_.size() < kMemo) memo_.emplace_back();
    it = memo_.end() - 1;  // the least recent, reused
    it->so_far.assign(so_far);
    it->at_start = at_start;
    it->end_ids.assign(end_ids.begin(), end_ids.end());
    compute_allowed(vocab, so_far, at_start, end_ids, it->tokens);
  }
  std::rotate(memo_.begin(), it, it + 1);  // most recent first
  return memo_.front().tokens;
}

void ChoiceSet::compute_allowed(const TokenTexts& vocab, std::string_view so_far, bool at_start,
                                std::span<const int32_t> end_ids, std::vector<int32_t>& out) const {
  out.clear();
  const bool drops_space = at_start && strip_first_space_;
  bool spelled_from_start = false;  // some choice can be spelled from its first byte (after a lone space)
  // The choices that start with so_far are one run of the sorted list.
  auto it = std::lower_bound(choices_.begin(), choices_.end(), so_far);
  for (; it != choices_.end() && std::string_view(*it).starts_with(so_far); ++it) {
    const std::vector<uint8_t>& ok = spellable_[static_cast<size_t>(it - choices_.begin())];
    const std::string_view rest = std::string_view(*it).substr(so_far.size());
    if (rest.empty()) {
      out.insert(out.end(), end_ids.begin(), end_ids.end());
      continue;
    }
    spelled_from_start = spelled_from_start || (drops_space && ok[0]);
    for_each_prefix_token(vocab, rest, drops_space, [&](size_t k, std::span<const int32_t> ids) {
      if (ok[so_far.size() + k]) out.insert(out.end(), ids.begin(), ids.end());
    });
  }
  if (spelled_from_start) {
    const std::span<const int32_t> space = vocab.ids_of(" ");
    out.insert(out.end(), space.begin(), space.end());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
}

std::string_view ChoiceSet::added_text(const TokenTexts& vocab, int32_t token, bool at_start) const {
  return vocab.added_text(token, at_start && strip_first_space_);
}

bool ChoiceSet::complete(std::string_view so_far) const {
  auto it = std::lower_bound(choices_.begin(), choices_.end(), so_far);
  return it != choices_.end() && *it == so_far && !continues(so_far);
}

bool ChoiceSet::continues(std::string_view so_far) const {
  auto it = std::upper_bound(choices_.begin(), choices_.end(), so_far);  // past so_far itself
  for (; it != choices_.end() && std::string_view(*it).starts_with(so_far); ++it)
    if (spellable_[static_cast<size_t>(it - choices_.begin())][so_far.size()]) return true;
  return false;
}

namespace {

class ChoiceGuide final : public OutputGuide {
 public:
  ChoiceGuide(std::shared_ptr<const ChoiceSet> set, const TokenTexts& vocab) : set_(std::move(set)), vocab_(vocab) {}

  const std::vector<int32_t>& allowed(std::span<const int32_t> end_ids) override {
    return set_->allowed(vocab_, text_, at_start_, end_ids);
  }
  void advance(int32_t token) override {
    text_ += set_->added_text(vocab_, token, at_start_);
    at_start_ = false;
  }
  bool complete() const override { return set_->complete(text_); }

 private:
  std::shared_ptr<const ChoiceSet> set_;
  const TokenTexts& vocab_;
  std::string text_;  // the bytes its tokens added so far
  bool at_start_ = true;
};

}  // namespace

std::unique_ptr<OutputGuide> follow_choices(std::shared_ptr<const ChoiceSet> set, const TokenTexts& vocab) {
  return std::make_unique<ChoiceGuide>(std::move(set), vocab);
}

}  // namespace kvshare

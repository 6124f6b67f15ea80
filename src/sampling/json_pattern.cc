#include "sampling/json_pattern.h"

#include <algorithm>
#include <cstring>

namespace kvshare {

namespace {

using Chars = std::bitset<128>;

Chars writable_chars() {
  Chars c;
  for (int i = 0x20; i < 0x7F; ++i) c.set(static_cast<size_t>(i));
  c.reset('"');
  c.reset('\\');
  return c;
}

Chars range(char lo, char hi) {
  Chars c;
  for (int i = lo; i <= hi; ++i) c.set(static_cast<size_t>(i));
  return c;
}

Chars digits() { return range('0', '9'); }
Chars word() { return range('a', 'z') | range('A', 'Z') | digits() | Chars().set('_'); }
Chars space() {
  Chars c;
  for (char s : std::string_view(" \t\n\v\f\r")) c.set(static_cast<size_t>(s));
  return c;
}

// The regular expression as a tree.
struct Node {
  enum class Kind { kChars, kConcat, kAlt, kRepeat, kCaret, kDollar } kind = Kind::kConcat;
  Chars chars;
  std::vector<Node> children;
  int min = 0, max = -1;  // kRepeat; max -1: no bound
};

constexpr int kMaxGroupDepth = 64;
constexpr int kMaxCount = 1000;

}  // namespace

class Pattern::Parser {
 public:
  explicit Parser(std::string_view re) : re_(re) {}

  Result<Node> parse() {
    KV_ASSIGN_OR_RETURN(Node n, alternation(0));
    if (at_ < re_.size()) return error("an unmatched ')'");
    return n;
  }

 private:
  Status error(const std::string& what) const {
    return invalid_argument("pattern: " + what + " at character " + std::to_string(at_ + 1) +
                            " is not supported; docs/limits.md lists what is");
  }
  bool more() const { return at_ < re_.size(); }
  char peek() const { return re_[at_]; }

  Result<Node> alternation(int depth) {
    Node alt;
    alt.kind = Node::Kind::kAlt;
    while (true) {
      KV_ASSIGN_OR_RETURN(Node seq, sequence(depth));
      alt.children.push_back(std::move(seq));
      if (!more() || peek() != '|') break;
      ++at_;
    }
    return alt;
  }

  Result<Node> sequence(int depth) {
    Node seq;
    while (more() && peek() != '|' && peek() != ')') {
      KV_ASSIGN_OR_RETURN(Node atom, this->atom(depth));
      if (atom.kind == Node::Kind::kCaret || atom.kind == Node::Kind::kDollar) {
        seq.children.push_back(std::move(atom));
        continue;
      }
      KV_ASSIGN_OR_RETURN(atom, quantified(std::move(atom)));
      seq.children.push_back(std::move(atom));
    }
    return seq;
  }

  // One quantifier (and its lazy '?'); another right after it is refused, as ECMA and Python refuse a** and
  // a{2}{2}.
  Result<Node> quantified(Node atom) {
    if (!more()) return atom;
    int min = 0, max = -1;
    const char c = peek();
    if (c == '*') {
      ++at_;
    } else if (c == '+') {
      min = 1;
      ++at_;
    } else if (c == '?') {
      max = 1;
      ++at_;
    } else if (c == '{') {
      KV_RETURN_IF_ERROR(counted(min, max));
    } else {
      return atom;
    }
    if (more() && peek() == '?') ++at_;  // lazy: the same language
    if (more() && (peek() == '*' || peek() == '+' || peek() == '?' || peek() == '{'))
      return error("a quantifier right after another");
    Node r;
    r.kind = Node::Kind::kRepeat;
    r.min = min;
    r.max = max;
    r.children.push_back(std::move(atom));
    return r;
  }

  // {n}, {n,} or {n,m} at `at_`. A '{' that is not one is refused: ECMA takes it as the character and Python reads
  // {,m} as a count, so a validator might read the pattern either way (write \{ for the character).
  Status counted(int& min, int& max) {
    size_t i = at_ + 1;
    auto number = [&](int& out) {
      const size_t begin = i;
      int64_t v = 0;
      while (i < re_.size() && re_[i] >= '0' && re_[i] <= '9')
        v = std::min<int64_t>(v * 10 + (re_[i++] - '0'), int64_t{1} << 30);
      out = static_cast<int>(v);
      return i > begin;
    };
    bool ok = number(min);
    max = min;
    if (ok && i < re_.size() && re_[i] == ',') {
      ++i;
      if (!number(max)) max = -1;
    }
    ok = ok && i < re_.size() && re_[i] == '}';
    if (!ok) return error("a '{' that is not a count ({n}, {n,} or {n,m}); write \\{ for the character");
    if (max >= 0 && max < min) return error("a count {n,m} with m under n");
    if (min > kMaxCount || max > kMaxCount) return error("a count over " + std::to_string(kMaxCount));
    at_ = i + 1;
    return Status::ok_status();
  }

  Result<Node> atom(int depth) {
    const char c = re_[at_++];
    Node n;
    n.kind = Node::Kind::kChars;
    switch (c) {
      case '^':
        n.kind = Node::Kind::kCaret;
        return n;
      case '$':
        n.kind = Node::Kind::kDollar;
        return n;
      case '.':
        n.chars = ~Chars().set('\n').set('\r');
        return n;
      case '[':
        return char_class();
      case '(': {
        if (depth + 1 > kMaxGroupDepth) return error("groups nested more than 64 deep");
        if (more() && peek() == '?') {
          const std::string_view rest = re_.substr(at_);
          if (!rest.starts_with("?:"))  // (a named group too: Python spells it (?P<name>...), ECMA (?<name>...))
            return error(rest.starts_with("?<") && !rest.starts_with("?<=") && !rest.starts_with("?<!")
                             ? "a named group (write (...))" : "lookahead or lookbehind");
          at_ += 2;
        }
        KV_ASSIGN_OR_RETURN(Node inner, alternation(depth + 1));
        if (!more() || peek() != ')') return error("a '(' without its ')'");
        ++at_;
        return inner;
      }
      case ')':
        return error("an unmatched ')'");
      case '*': case '+': case '?': case '{':
        return error("a quantifier with nothing before it, or a '{' (write \\{ for the character)");
      case '\\':
        return escape(false);
      default:
        if (static_cast<unsigned char>(c) >= 0x80) return error("a character past ASCII");
        n.chars.set(static_cast<size_t>(c));
        return n;
    }
  }

  // After '\': a class (\d \w \s and negations) or one character, whose code point goes to `code` (-1 for a
  // class). In a class, \b is a backspace. A character past ASCII matches nothing written here.
  Result<Node> escape(bool in_class, int* code = nullptr) {
    if (!more()) return error("a '\\' at the end");
    const char c = re_[at_++];
    Node n;
    n.kind = Node::Kind::kChars;
    if (code != nullptr) *code = -1;
    auto one = [&](int v) {
      if (code != nullptr) *code = v;
      if (v < 0x80) n.chars.set(static_cast<size_t>(v));
      return n;
    };
    auto hex = [&](int count) -> Result<int> {
      int v = 0;
      for (int k = 0; k < count; ++k) {
        if (!more()) return error("a short \\x or \\u escape");
        const char h = re_[at_++];
        const int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                      : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) return error("a \\x or \\u escape without hex digits");
        v = v * 16 + d;
      }
      return v;
    };
    switch (c) {
      case 'd': n.chars = digits(); return n;
      case 'D': n.chars = ~digits(); return n;
      case 'w': n.chars = word(); return n;
      case 'W': n.chars = ~word(); return n;
      case 's': n.chars = space(); return n;
      case 'S': n.chars = ~space(); return n;
      case 't': return one('\t');
      case 'n': return one('\n');
      case 'r': return one('\r');
      case 'f': return one('\f');
      case 'v': return one('\v');
      case 'x': case 'u': {
        KV_ASSIGN_OR_RETURN(int v, hex(c == 'x' ? 2 : 4));
        return one(v);
      }
      case 'b':
        if (in_class) return one('\b');
        return error("\\b (a word boundary)");
      default:
        if ((c >= '0' && c <= '9') || c == 'B' || c == 'k' || c == 'p' || c == 'P' || c == 'c')
          return error(std::string("\\") + c);
        if (static_cast<unsigned char>(c) >= 0x80 || ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
          return error(std::string("the escape \\") + c);
        return one(static_cast<unsigned char>(c));  // an escaped punctuation character stands for itself
    }
  }

  // After '[': [^...], ranges a-z, escapes. "[]" and "[^]" are refused (ECMA reads an empty class, Python a ']').
  Result<Node> char_class() {
    Node n;
    n.kind = Node::Kind::kChars;
    bool negated = false;
    if (more() && peek() == '^') {
      negated = true;
      ++at_;
    }
    if (more() && peek() == ']') return error("an empty class or a ']' first in one (write \\] for the character)");
    // one member: a character, or a class escape (which cannot bound a range); its code point, -1 for a class
    auto member = [&](Chars& chars, int& code) -> Status {
      if (!more()) return error("a '[' without its ']'");
      if (peek() == '\\') {
        ++at_;
        KV_ASSIGN_OR_RETURN(Node e, escape(true, &code));
        chars = e.chars;
        return Status::ok_status();
      }
      const auto c = static_cast<unsigned char>(re_[at_++]);
      if (c >= 0x80) return error("a character past ASCII");
      code = c;
      chars.set(c);
      return Status::ok_status();
    };
    while (true) {
      if (!more()) return error("a '[' without its ']'");
      if (peek() == ']') break;
      Chars chars;
      int lo = -1;
      KV_RETURN_IF_ERROR(member(chars, lo));
      if (at_ + 1 < re_.size() && peek() == '-' && re_[at_ + 1] != ']') {
        ++at_;  // a range lo-hi
        Chars end;
        int hi = -1;
        KV_RETURN_IF_ERROR(member(end, hi));
        if (lo < 0 || hi < 0) return error("a range that starts or ends with a class");
        if (hi < lo) return error("a range whose end comes before its start");
        for (int i = lo; i <= hi && i < 128; ++i) chars.set(static_cast<size_t>(i));
      }
      n.chars |= chars;
    }
    ++at_;  // ']'
    if (negated) n.chars = ~n.chars;
    return n;
  }

  std::string_view re_;
  size_t at_ = 0;
};

namespace {

// Thompson's construction, back to front: `next` is the state a match of `n` goes on to.
class Builder {
 public:
  explicit Builder(std::vector<Pattern::State>& states) : states_(states) {}
  bool too_large() const { return states_.size() > Pattern::kMaxStates; }

  int32_t build(const Node& n, int32_t next) {
    if (too_large()) return next;
    switch (n.kind) {
      case Node::Kind::kChars: {
        Pattern::State s;
        s.chars = n.chars & writable_chars();
        s.next = next;
        return add(s);
      }
      case Node::Kind::kConcat:
        for (size_t i = n.children.size(); i > 0; --i) next = build(n.children[i - 1], next);
        return next;
      case Node::Kind::kAlt: {
        int32_t entry = build(n.children.back(), next);
        for (size_t i = n.children.size() - 1; i > 0; --i) entry = split(build(n.children[i - 1], next), entry);
        return entry;
      }
      case Node::Kind::kRepeat: {
        const Node& body = n.children[0];
        int32_t entry = next;
        if (n.max < 0) {  // body* : a split that loops through the body
          const int32_t loop = split(-1, next);
          states_[static_cast<size_t>(loop)].next = build(body, loop);
          entry = loop;
        } else {
          for (int k = n.min; k < n.max && !too_large(); ++k) entry = split(build(body, entry), next);
        }
        for (int k = 0; k < n.min && !too_large(); ++k) entry = build(body, entry);
        return entry;
      }
      case Node::Kind::kCaret: case Node::Kind::kDollar:
        return next;  // (placed and checked before building)
    }
    return next;
  }

  int32_t split(int32_t a, int32_t b) {
    Pattern::State s;
    s.split = true;
    s.next = a;
    s.alt = b;
    return add(s);
  }
  int32_t add(const Pattern::State& s) {
    states_.push_back(s);
    return static_cast<int32_t>(states_.size() - 1);
  }

 private:
  std::vector<Pattern::State>& states_;
};

}  // namespace

Result<std::shared_ptr<const Pattern>> Pattern::compile(std::string_view regex) {
  Parser parser(regex);
  KV_ASSIGN_OR_RETURN(Node root, parser.parse());
  // A search, as JSON Schema's pattern is: each top-level alternative matches anywhere, unless ^ or $ pins it.
  Node any;
  any.kind = Node::Kind::kRepeat;
  any.children.push_back(Node{Node::Kind::kChars, writable_chars(), {}, 0, -1});
  for (Node& seq : root.children) {
    std::vector<Node>& items = seq.children;
    const bool caret = !items.empty() && items.front().kind == Node::Kind::kCaret;
    if (caret) items.erase(items.begin());
    const bool dollar = !items.empty() && items.back().kind == Node::Kind::kDollar;
    if (dollar) items.pop_back();
    if (!caret) items.insert(items.begin(), any);
    if (!dollar) items.push_back(any);
  }
  // Every other anchor (inside a sequence, or in a group) is refused.
  std::vector<const Node*> stack = {&root};
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    for (const Node& c : n->children) {
      if (c.kind == Node::Kind::kCaret || c.kind == Node::Kind::kDollar)
        return invalid_argument("pattern: ^ and $ are supported only at the start and end of the pattern (or of one "
                                "of its top-level alternatives)");
      stack.push_back(&c);
    }
  }
  auto p = std::make_shared<Pattern>();
  p->states_.push_back(State{});  // state 0: the match state
  p->match_ = 0;
  Builder b(p->states_);
  p->entry_ = b.build(root, p->match_);
  if (b.too_large())
    return invalid_argument("pattern: it needs more than " + std::to_string(kMaxStates) + " states (counted "
                            "repetitions are written out); simplify it");
  p->finish();
  size_t closure = 0;
  for (const auto& c : p->closure_) closure += c.size();
  if (closure > kMaxClosure)
    return invalid_argument("pattern: a character may lead to too many places in it (" + std::to_string(closure) +
                            " closure entries, at most " + std::to_string(kMaxClosure) + "; optional pieces in a row "
                            "such as (?:.?){250} make this grow): simplify it, e.g. .{0,250}");
  if (std::all_of(p->start_set_.begin(), p->start_set_.end(), [](char c) { return c == 0; }))
    return invalid_argument("pattern: no text this server writes matches it (a string under a pattern is written "
                            "in printable ASCII, without '\"' or '\\')");
  return std::shared_ptr<const Pattern>(std::move(p));
}

void Pattern::add_closure(int32_t s, std::vector<bool>& seen, std::vector<int32_t>& out) const {
  std::vector<int32_t> stack = {s};
  while (!stack.empty()) {
    const int32_t t = stack.back();
    stack.pop_back();
    if (t < 0 || seen[static_cast<size_t>(t)]) continue;
    seen[static_cast<size_t>(t)] = true;
    const State& st = states_[static_cast<size_t>(t)];
    if (st.split) {
      stack.push_back(st.alt);
      stack.push_back(st.next);
    } else {
      out.push_back(t);
    }
  }
}

void Pattern::finish() {
  const size_t n = states_.size();
  closure_.assign(n, {});
  for (size_t s = 0; s < n; ++s) {
    std::vector<bool> seen(n);
    add_closure(static_cast<int32_t>(s), seen, closure_[s]);
  }
  // Live: the match state, and each character state from which a character leads to a live state.
  live_.assign(n, false);
  live_[static_cast<size_t>(match_)] = true;
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t s = 0; s < n; ++s) {
      const State& st = states_[s];
      if (live_[s] || st.split || st.chars.none()) continue;
      for (int32_t t : closure_[static_cast<size_t>(st.next)]) {
        if (live_[static_cast<size_t>(t)]) {
          live_[s] = true;
          changed = true;
          break;
        }
      }
    }
  }
  start_set_.assign((n + 7) / 8, '\0');
  for (int32_t t : closure_[static_cast<size_t>(entry_)])
    if (live_[static_cast<size_t>(t)]) start_set_[static_cast<size_t>(t) >> 3] |= static_cast<char>(1 << (t & 7));
  std::lock_guard<std::mutex> lock(mutex_);
  start_ = place_of(state_of(start_set_));  // state 0
  for (size_t s = 0; s < n; ++s)
    if (live_[s] && !states_[s].split && states_[s].chars.count() == 1)
      for (int c = 0; c < 128; ++c)
        if (states_[s].chars.test(static_cast<size_t>(c))) forced_.set(static_cast<size_t>(c));
}

Pattern::DfaState::DfaState() {
  for (std::atomic<int32_t>& n : next) n.store(kUnknown, std::memory_order_relaxed);
}

std::string Pattern::place_of(int32_t id) { return std::string(reinterpret_cast<const char*>(&id), sizeof id); }

int32_t Pattern::id_of(const std::string& place) {
  if (place.size() != sizeof(int32_t)) return -1;
  int32_t id;
  std::memcpy(&id, place.data(), sizeof id);
  return id;
}

std::string Pattern::next_set(std::string_view set, char c) const {
  char next[kMaxStates / 8 + 1] = {};
  bool any = false;
  for (size_t s = 0; s < states_.size(); ++s) {
    if (!((set[s >> 3] >> (s & 7)) & 1)) continue;
    const State& st = states_[s];
    if (st.split || !st.chars.test(static_cast<size_t>(c))) continue;
    for (int32_t t : closure_[static_cast<size_t>(st.next)]) {
      if (!live_[static_cast<size_t>(t)]) continue;
      next[static_cast<size_t>(t) >> 3] |= static_cast<char>(1 << (t & 7));
      any = true;
    }
  }
  return any ? std::string(next, set.size()) : std::string();
}

int32_t Pattern::state_of(const std::string& set) const {
  if (auto it = ids_.find(set); it != ids_.end()) return it->second;
  if (dfa_size_ == kMaxDfaStates) return kNoRoom;
  const int32_t id = dfa_size_++;
  if (id % kDfaChunk == 0) {
    owned_.push_back(std::make_unique<DfaState[]>(kDfaChunk));
    chunks_[static_cast<size_t>(id / kDfaChunk)].store(owned_.back().get(), std::memory_order_release);
  }
  DfaState& d = dfa(id);
  d.set = set;
  d.matches = (set[static_cast<size_t>(match_) >> 3] >> (match_ & 7)) & 1;
  ids_.emplace(set, id);
  return id;
}

int32_t Pattern::add_step(int32_t from, char c) const {
  std::atomic<int32_t>& slot = dfa(from).next[static_cast<size_t>(c - 0x20)];
  if (const int32_t known = slot.load(std::memory_order_acquire); known != kUnknown) return known;
  const std::string set = next_set(dfa(from).set, c);
  const int32_t to = set.empty() ? kDead : state_of(set);
  if (to != kNoRoom) slot.store(to, std::memory_order_release);
  return to;
}

bool Pattern::step(std::string& place, char c) const {
  if (!writable(c)) return false;
  const int32_t id = id_of(place);
  if (id >= 0) {
    int32_t to = dfa(id).next[static_cast<size_t>(c - 0x20)].load(std::memory_order_acquire);
    if (to == kUnknown) {
      std::lock_guard<std::mutex> lock(mutex_);
      to = add_step(id, c);
    }
    if (to == kDead) return false;
    if (to >= 0) {
      std::memcpy(place.data(), &to, sizeof to);
      return true;
    }
  }
  // A set the DFA has no room for (or one step past the DFA's last state): the NFA's step, kept in a bounded cache.
  thread_local std::string key;  // (assigned: no allocation per step)
  key.assign(id >= 0 ? dfa(id).set : place.substr(1, start_set_.size()));
  key += c;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (const auto it = raw_steps_.find(key); it != raw_steps_.end()) {
      if (it->second.empty()) return false;
      place = it->second;
      return true;
    }
  }
  const std::string set = next_set(std::string_view(key).substr(0, key.size() - 1), c);
  std::lock_guard<std::mutex> lock(mutex_);
  std::string to;
  if (const auto it = ids_.find(set); !set.empty() && it != ids_.end()) {
    to = place_of(it->second);
  } else if (!set.empty()) {
    to = kRawPlace + set;
    if (to.size() == sizeof(int32_t)) to += '\0';  // (a raw place is never as long as a state's)
  }
  if (raw_steps_.size() >= kMaxRawSteps) raw_steps_.clear();
  raw_steps_.emplace(key, to);
  if (to.empty()) return false;
  place = std::move(to);
  return true;
}

bool Pattern::matches(const std::string& place) const {
  const int32_t id = id_of(place);
  if (id >= 0) return dfa(id).matches;
  return (place[1 + (static_cast<size_t>(match_) >> 3)] >> (match_ & 7)) & 1;
}

size_t Pattern::dfa_states() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<size_t>(dfa_size_);
}

const std::bitset<128>& Pattern::safe_characters(const std::string& place) const {
  static const std::bitset<128> none;
  const int32_t id = id_of(place);
  if (id < 0) return none;
  DfaState& d = dfa(id);
  if (d.has_safe.load(std::memory_order_acquire)) return d.safe;
  std::lock_guard<std::mutex> lock(mutex_);
  if (d.has_safe.load(std::memory_order_relaxed)) return d.safe;
  // From all written characters, take away those that lead some state reachable with the rest to no live state,
  // until none does. Given up (none) where the region holds more than kMaxSafeRegion states, or the DFA is half
  // full: the search must not take the room the walk's own places need ((?:.?){62}a.{14} filled all 4,096 states
  // from its first place, and then its places were raw).
  std::bitset<128> safe;
  if (dfa_size_ <= kMaxDfaStates / 2)
    for (int c = 0x20; c < 0x7F; ++c)
      if (writable(static_cast<char>(c))) safe.set(static_cast<size_t>(c));
  for (bool changed = true; changed && safe.any();) {
    changed = false;
    std::vector<int32_t> region = {id};
    std::vector<bool> seen(static_cast<size_t>(kMaxDfaStates));
    seen[static_cast<size_t>(id)] = true;
    for (size_t i = 0; i < region.size() && !changed; ++i) {
      for (int c = 0x20; c < 0x7F; ++c) {
        if (!safe.test(static_cast<size_t>(c))) continue;
        const int32_t to = add_step(region[i], static_cast<char>(c));
        if (to == kNoRoom) {
          safe.reset();
          break;
        }
        if (to == kDead) {
          safe.reset(static_cast<size_t>(c));
          changed = true;
        } else if (!seen[static_cast<size_t>(to)]) {
          seen[static_cast<size_t>(to)] = true;
          region.push_back(to);
          if (region.size() > kMaxSafeRegion) {
            safe.reset();
            break;
          }
        }
      }
    }
  }
  d.safe = safe;
  d.has_safe.store(true, std::memory_order_release);
  return d.safe;
}

}  // namespace kvshare

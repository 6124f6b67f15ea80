// The Jinja engine: preprocessing and lexing, a recursive-descent parser and a tree-walking interpreter, each
// following @huggingface/jinja 0.5.11's semantics (see jinja.h). Errors are thrown as JinjaError inside and
// become a Status at the Template boundary.
#include "chat/jinja.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <unordered_set>

#include "chat/jinja_text.h"

namespace kvshare::jinja {

namespace {

constexpr size_t kNoPos = static_cast<size_t>(-1);

struct JinjaError {
  std::string message;
  size_t pos = kNoPos;  // offset in the original source
};

[[noreturn]] void fail(std::string message, size_t pos = kNoPos) { throw JinjaError{std::move(message), pos}; }

struct BreakSignal {};
struct ContinueSignal {};

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Values

const Value* OrderedMap::find(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}
Value* OrderedMap::find(const std::string& key) {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}
void OrderedMap::set(const std::string& key, Value v) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    entries_[it->second].second = std::move(v);
    return;
  }
  index_.emplace(key, entries_.size());
  entries_.emplace_back(key, std::move(v));
}

Value Value::null() {
  Value v;
  v.kind = Kind::kNull;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind = Kind::kBool;
  v.b = b;
  return v;
}
Value Value::integer(double x) {
  Value v;
  v.kind = Kind::kInt;
  v.num = x;
  return v;
}
Value Value::floating(double x) {
  Value v;
  v.kind = Kind::kFloat;
  v.num = x;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind = Kind::kString;
  v.str = std::move(s);
  return v;
}
// What a list item counts toward the render's budget, besides its strings: twice its size, because making a list
// costs about twice per byte what making a string does (measured on AMD EPYC Zen 5: a loop splitting 512 KiB of
// spaces, 524,289 empty pieces at a time, ran out of the budget in about the time a loop copying a 64 MiB string
// does once items count this much).
constexpr uint64_t kListItemBytes = 2 * sizeof(Value);

Value Value::array(std::vector<Value> items, bool tuple) {
  Value v;
  v.kind = Kind::kArray;
  v.arr = std::make_shared<ArrayData>();
  v.arr->items = std::move(items);
  v.arr->is_tuple = tuple;
  // Saturating: a list of lists of the same list, nested 64 deep, counts more than 2^64 (and is refused).
  for (const Value& item : v.arr->items) {
    const uint64_t add = kListItemBytes + (item.kind == Kind::kString ? item.str.size()
                                          : item.kind == Kind::kArray ? item.arr->bytes
                                                                      : 0);
    v.arr->bytes = add > UINT64_MAX - v.arr->bytes ? UINT64_MAX : v.arr->bytes + add;
  }
  return v;
}
Value Value::object(ObjectKind kind) {
  Value v;
  v.kind = Kind::kObject;
  v.obj = std::make_shared<ObjectData>();
  v.obj->kind = kind;
  return v;
}
Value Value::function(NativeFn f) {
  Value v;
  v.kind = Kind::kFunction;
  v.fn = std::make_shared<NativeFn>(std::move(f));
  return v;
}

namespace {

// A JavaScript array index ("0", "17"; not "01" or "-1"), which objects list first, in ascending order.
bool is_array_index(const std::string& k, uint64_t& out) {
  if (k.empty() || k.size() > 10 || (k.size() > 1 && k[0] == '0')) return false;
  uint64_t v = 0;
  for (char c : k) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v >= 4294967295ull) return false;
  out = v;
  return true;
}

}  // namespace

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return null();
    case nlohmann::ordered_json::value_t::boolean: return boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return integer(static_cast<double>(j.get<int64_t>()));
    case nlohmann::ordered_json::value_t::number_unsigned: return integer(static_cast<double>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: {
      const double d = j.get<double>();
      return std::isfinite(d) && std::floor(d) == d ? integer(d) : floating(d);
    }
    case nlohmann::ordered_json::value_t::string: return string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return array(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value o = object();
      std::vector<std::pair<uint64_t, const std::string*>> indices;
      for (auto it = j.begin(); it != j.end(); ++it) {
        uint64_t idx;
        if (is_array_index(it.key(), idx)) indices.emplace_back(idx, &it.key());
      }
      std::sort(indices.begin(), indices.end());
      for (const auto& [idx, key] : indices) o.obj->map.set(*key, from_json(j.at(*key)));
      for (auto it = j.begin(); it != j.end(); ++it) {
        uint64_t idx;
        if (!is_array_index(it.key(), idx)) o.obj->map.set(it.key(), from_json(it.value()));
      }
      return o;
    }
    default: return undefined();
  }
}

bool Value::truthy() const {
  switch (kind) {
    case Kind::kUndefined:
    case Kind::kNull: return false;
    case Kind::kBool: return b;
    case Kind::kInt:
    case Kind::kFloat: return num != 0 && !std::isnan(num);
    case Kind::kString: return !str.empty();
    case Kind::kArray: return !arr->items.empty();
    case Kind::kObject: return obj->kind == ObjectKind::kNamespace || obj->map.size() > 0;
    case Kind::kFunction: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (kind) {
    case Kind::kUndefined: return "UndefinedValue";
    case Kind::kNull: return "NullValue";
    case Kind::kBool: return "BooleanValue";
    case Kind::kInt: return "IntegerValue";
    case Kind::kFloat: return "FloatValue";
    case Kind::kString: return "StringValue";
    case Kind::kArray: return arr->is_tuple ? "TupleValue" : "ArrayValue";
    case Kind::kObject:
      return obj->kind == ObjectKind::kNamespace ? "NamespaceValue"
             : obj->kind == ObjectKind::kKwargs  ? "KeywordArgumentsValue"
                                                 : "ObjectValue";
    case Kind::kFunction: return "FunctionValue";
  }
  return "?";
}

namespace {

// ---------------------------------------------------------------------------------------------------------
// JSON and string conversions

struct JsonOptions {
  int indent = 0;
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool has_separators = false;
  std::string item_sep, key_sep;
};

// localeCompare for object keys, approximated: punctuation < digits < letters, letters case-insensitively with
// lower case first on ties.
int locale_compare(const std::string& a, const std::string& b) {
  auto cls = [](unsigned char c) { return std::isalpha(c) ? 2 : std::isdigit(c) ? 1 : 0; };
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = a[i], y = b[i];
    if (x == y) continue;
    if (cls(x) != cls(y)) return cls(x) < cls(y) ? -1 : 1;
    const int lx = std::tolower(x), ly = std::tolower(y);
    if (lx != ly) return lx < ly ? -1 : 1;
  }
  if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return std::islower(static_cast<unsigned char>(a[i])) ? -1 : 1;
  return 0;
}

std::string to_json(const Value& v, const JsonOptions& o, int depth, bool undefined_to_null, size_t limit) {
  std::string item_sep = ", ", key_sep = ": ";
  if (o.has_separators) {
    item_sep = o.item_sep, key_sep = o.key_sep;
  } else if (o.indent) {
    item_sep = ",";
  }
  switch (v.kind) {
    case Kind::kNull: return "null";
    case Kind::kUndefined: return undefined_to_null ? "null" : "undefined";
    case Kind::kInt:
    case Kind::kFloat: return std::isfinite(v.num) ? text::js_number(v.num) : "null";
    case Kind::kBool: return v.b ? "true" : "false";
    case Kind::kString: return text::json_quote(v.str, o.ensure_ascii);
    case Kind::kArray:
    case Kind::kObject: {
      // The reference's toJSON knows ArrayValue, ObjectValue and NamespaceValue, not their subclasses.
      if ((v.kind == Kind::kArray && v.arr->is_tuple) || (v.kind == Kind::kObject && v.obj->kind == ObjectKind::kKwargs))
        fail(std::string("Cannot convert to JSON: ") + v.type_name());
      if (depth > 200) fail("tojson: the value is nested too deeply");
      const std::string ind = o.indent ? std::string(o.indent, ' ') : "";
      std::string base = "\n";
      for (int i = 0; i < depth; ++i) base += ind;
      const std::string child = base + ind;
      std::string out;
      auto check = [&] {
        if (out.size() > limit) fail("tojson: the output exceeds the size limit");
      };
      if (v.kind == Kind::kArray) {
        const auto& items = v.arr->items;
        out = "[";
        for (size_t i = 0; i < items.size(); ++i) {
          if (i) out += item_sep;
          if (o.indent) out += child;
          out += to_json(items[i], o, depth + 1, undefined_to_null, limit);
          check();
        }
        if (o.indent && !items.empty()) out += base;
        return out + "]";
      }
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& e : v.obj->map.entries()) entries.push_back(&e);
      if (o.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](auto* x, auto* y) { return locale_compare(x->first, y->first) < 0; });
      out = "{";
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out += item_sep;
        if (o.indent) out += child;
        out += text::json_quote(entries[i]->first, o.ensure_ascii) + key_sep +
               to_json(entries[i]->second, o, depth + 1, undefined_to_null, limit);
        check();
      }
      if (o.indent && !entries.empty()) out += base;
      return out + "}";
    }
    case Kind::kFunction: fail("Cannot convert to JSON: FunctionValue");
  }
  return "";
}

// RuntimeValue.toString(): what {{ }} prints.
std::string to_output(const Value& v, size_t limit) {
  switch (v.kind) {
    case Kind::kUndefined: return "undefined";
    case Kind::kNull: return "null";
    case Kind::kBool: return v.b ? "true" : "false";
    case Kind::kInt: return text::js_number(v.num);
    case Kind::kFloat: return text::js_float(v.num);
    case Kind::kString: return v.str;
    case Kind::kArray: return to_json(v, {}, 0, false, limit);
    case Kind::kObject: return v.obj->text.empty() ? to_json(v, {}, 0, false, limit) : v.obj->text;
    case Kind::kFunction: return "[function]";
  }
  return "";
}

// The raw JavaScript value's toString() (used by `~`, string `+` and join): numbers without ".0",
// arrays as their elements joined by ",", objects as "[object Map]".
std::string raw_string(const Value& v, size_t limit) {
  switch (v.kind) {
    case Kind::kInt:
    case Kind::kFloat: return text::js_number(v.num);
    case Kind::kArray: {
      std::string out;
      for (size_t i = 0; i < v.arr->items.size(); ++i) {
        if (i) out += ",";
        out += to_output(v.arr->items[i], limit);
        if (out.size() > limit) fail("the output exceeds the size limit");
      }
      return out;
    }
    case Kind::kObject: return v.obj->text.empty() ? "[object Map]" : v.obj->text;
    default: return to_output(v, limit);
  }
}

// JavaScript's loose equality (==) on the reference's raw values.
bool loose_equal(const Value& a, const Value& b) {
  const bool an = a.kind == Kind::kNull || a.kind == Kind::kUndefined;
  const bool bn = b.kind == Kind::kNull || b.kind == Kind::kUndefined;
  if (an || bn) return an && bn;
  auto is_num = [](const Value& v) { return v.kind == Kind::kInt || v.kind == Kind::kFloat; };
  if (is_num(a) && is_num(b)) return a.num == b.num;
  if (a.kind == Kind::kString && b.kind == Kind::kString) return a.str == b.str;
  if (a.kind == Kind::kBool && b.kind == Kind::kBool) return a.b == b.b;
  if (a.kind == Kind::kArray && b.kind == Kind::kArray) return a.arr == b.arr;
  if (a.kind == Kind::kObject && b.kind == Kind::kObject) return a.obj == b.obj;
  if (a.kind == Kind::kFunction && b.kind == Kind::kFunction) return a.fn == b.fn;
  if (a.kind == Kind::kBool) return loose_equal(Value::integer(a.b ? 1 : 0), b);
  if (b.kind == Kind::kBool) return loose_equal(a, Value::integer(b.b ? 1 : 0));
  if (is_num(a) && b.kind == Kind::kString) {
    double d;
    return text::to_number(b.str, d) && d == a.num;
  }
  if (a.kind == Kind::kString && is_num(b)) return loose_equal(b, a);
  // An object against a primitive compares the object's string form.
  auto prim = [](const Value& v) {
    return v.kind == Kind::kArray ? Value::string(raw_string(v, 1u << 30))
                                  : Value::string(v.kind == Kind::kObject ? "[object Map]" : "function");
  };
  if ((a.kind == Kind::kArray || a.kind == Kind::kObject || a.kind == Kind::kFunction) &&
      (b.kind == Kind::kString || is_num(b)))
    return loose_equal(prim(a), b);
  if ((b.kind == Kind::kArray || b.kind == Kind::kObject || b.kind == Kind::kFunction) &&
      (a.kind == Kind::kString || is_num(a)))
    return loose_equal(a, prim(b));
  return false;
}

// JavaScript's === on the raw values (used by `in` over arrays and the equalto test).
bool strict_equal(const Value& a, const Value& b) {
  auto is_num = [](const Value& v) { return v.kind == Kind::kInt || v.kind == Kind::kFloat; };
  if (is_num(a) && is_num(b)) return a.num == b.num;
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::kUndefined:
    case Kind::kNull: return true;
    case Kind::kBool: return a.b == b.b;
    case Kind::kString: return a.str == b.str;
    case Kind::kArray: return a.arr == b.arr;
    case Kind::kObject: return a.obj == b.obj;
    case Kind::kFunction: return a.fn == b.fn;
    default: return false;
  }
}

bool numeric_like(const Value& v) { return v.kind == Kind::kInt || v.kind == Kind::kFloat || v.kind == Kind::kBool; }
double numeric_value(const Value& v) { return v.kind == Kind::kBool ? (v.b ? 1 : 0) : v.num; }

// The reference's compareRuntimeValues (sort, dictsort).
int compare_values(const Value& a, const Value& b, bool case_sensitive) {
  if (a.is_null() && b.is_null()) return 0;
  if (a.is_null() || b.is_null()) fail(std::string("Cannot compare ") + a.type_name() + " with " + b.type_name());
  if (a.is_undefined() && b.is_undefined()) return 0;
  if (a.is_undefined() || b.is_undefined())
    fail(std::string("Cannot compare ") + a.type_name() + " with " + b.type_name());
  if (numeric_like(a) && numeric_like(b)) {
    const double x = numeric_value(a), y = numeric_value(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (std::strcmp(a.type_name(), b.type_name()) != 0)
    fail(std::string("Cannot compare different types: ") + a.type_name() + " and " + b.type_name());
  if (a.is_string()) {
    std::string x = a.str, y = b.str;
    if (!case_sensitive) x = text::to_lower(x), y = text::to_lower(y);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  fail(std::string("Cannot compare type: ") + a.type_name());
}

// ---------------------------------------------------------------------------------------------------------
// Preprocessing and lexing

enum class Tok {
  kText, kNumber, kString, kIdent, kEquals, kLParen, kRParen, kOpenStmt, kCloseStmt, kOpenExpr, kCloseExpr,
  kLBracket, kRBracket, kLBrace, kRBrace, kComma, kDot, kColon, kPipe, kAdditive, kMultiplicative, kPower,
  kComparison, kUnary, kComment,
};

const char* tok_name(Tok t) {
  static const char* kNames[] = {"text", "number", "string", "identifier", "'='", "'('", "')'", "'{%'", "'%}'",
                                 "'{{'", "'}}'", "'['", "']'", "'{'", "'}'", "','", "'.'", "':'", "'|'",
                                 "operator", "operator", "'**'", "comparison", "unary operator", "comment"};
  return kNames[static_cast<int>(t)];
}

struct Token {
  Tok type;
  std::string value;
  size_t pos;  // original source offset
};

// "identifier 'foo'", "'}}'", "operator '+'": what an error message says it found.
std::string describe(const Token& t) {
  const std::string name = tok_name(t.type);
  if (name[0] == '\'' || t.value.empty()) return name;
  std::string v = t.value.size() > 40 ? t.value.substr(0, 40) + "..." : t.value;
  return name + " '" + v + "'";
}

// The preprocessed source and, for every byte, its offset in the original.
struct Source {
  std::string s;
  std::vector<size_t> orig;
};

// The reference's preprocess(): drop one trailing newline, lstrip_blocks, trim_blocks, and remove the
// transformers-specific {% generation %} / {% endgeneration %} tags.
Source preprocess(const std::string& in) {
  Source a;
  size_t n = in.size();
  if (n > 0 && in[n - 1] == '\n') --n;
  // lstrip_blocks: /^[ \t]*({[#%-])/gm -> "$1"
  for (size_t i = 0; i < n;) {
    const bool line_start = i == 0 || in[i - 1] == '\n' || in[i - 1] == '\r' ||
                            (i >= 3 && (static_cast<unsigned char>(in[i - 1]) == 0xA8 ||
                                        static_cast<unsigned char>(in[i - 1]) == 0xA9) &&
                             static_cast<unsigned char>(in[i - 2]) == 0x80 &&
                             static_cast<unsigned char>(in[i - 3]) == 0xE2);
    if (line_start) {
      size_t j = i;
      while (j < n && (in[j] == ' ' || in[j] == '\t')) ++j;
      if (j > i && j + 1 < n && in[j] == '{' && (in[j + 1] == '#' || in[j + 1] == '%' || in[j + 1] == '-')) i = j;
    }
    a.s += in[i];
    a.orig.push_back(i);
    ++i;
  }
  // trim_blocks: /([#%-]})\n/g -> "$1"
  Source b;
  for (size_t i = 0; i < a.s.size(); ++i) {
    b.s += a.s[i];
    b.orig.push_back(a.orig[i]);
    if (a.s[i] == '}' && i > 0 && (a.s[i - 1] == '#' || a.s[i - 1] == '%' || a.s[i - 1] == '-') &&
        i + 1 < a.s.size() && a.s[i + 1] == '\n')
      ++i;
  }
  // /(\s*){%(-?)\s*(?:end)?generation\s*(-?)%}(\s*)/gs
  Source c;
  const std::string& s = b.s;
  size_t i = 0;
  while (i < s.size()) {
    // Find the next generation tag at or after i.
    size_t tag = s.find("{%", i);
    bool matched = false;
    size_t tag_end = 0;
    bool lstrip = false, rstrip = false;
    while (tag != std::string::npos) {
      size_t p = tag + 2;
      lstrip = p < s.size() && s[p] == '-';
      if (lstrip) ++p;
      while (size_t k = text::space_len(s, p)) p += k;
      if (s.compare(p, 3, "end") == 0 && s.compare(p + 3, 10, "generation") == 0) p += 3;
      if (s.compare(p, 10, "generation") == 0) {
        p += 10;
        while (size_t k = text::space_len(s, p)) p += k;
        rstrip = p < s.size() && s[p] == '-';
        if (rstrip) ++p;
        if (s.compare(p, 2, "%}") == 0) {
          matched = true;
          tag_end = p + 2;
          break;
        }
      }
      tag = s.find("{%", tag + 2);
    }
    if (!matched) {
      for (; i < s.size(); ++i) c.s += s[i], c.orig.push_back(b.orig[i]);
      break;
    }
    // Whitespace right before the tag (but not before i).
    size_t ws = tag;
    while (ws > i) {
      size_t back = ws - 1;
      while (back > i && (static_cast<unsigned char>(s[back]) & 0xC0) == 0x80) --back;
      if (text::space_len(s, back) == ws - back)
        ws = back;
      else
        break;
    }
    size_t after = tag_end;
    while (size_t k = text::space_len(s, after)) after += k;
    for (size_t k = i; k < ws; ++k) c.s += s[k], c.orig.push_back(b.orig[k]);
    if (!lstrip)
      for (size_t k = ws; k < tag; ++k) c.s += s[k], c.orig.push_back(b.orig[k]);
    if (!rstrip)
      for (size_t k = tag_end; k < after; ++k) c.s += s[k], c.orig.push_back(b.orig[k]);
    i = after;
  }
  c.orig.push_back(in.size());  // the end
  return c;
}

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool is_digit_char(char c) { return c >= '0' && c <= '9'; }

class Lexer {
 public:
  explicit Lexer(const Source& src) : src_(src), s_(src.s) {}

  std::vector<Token> run() {
    while (cur_ < s_.size()) {
      const Tok* last = tokens_.empty() ? nullptr : &tokens_.back().type;
      if (!last || *last == Tok::kCloseStmt || *last == Tok::kCloseExpr || *last == Tok::kComment) {
        const size_t start = cur_;
        while (cur_ < s_.size() &&
               !(s_[cur_] == '{' && cur_ + 1 < s_.size() && (s_[cur_ + 1] == '%' || s_[cur_ + 1] == '{' || s_[cur_ + 1] == '#')))
          ++cur_;
        if (cur_ > start) {
          push(Tok::kText, s_.substr(start, cur_ - start), start);
          continue;
        }
      }
      if (at("{#")) {
        lex_comment();
        continue;
      }
      if (at("{%-")) {
        strip_trailing();
        push(Tok::kOpenStmt, "{%", cur_);
        cur_ += 3;
        continue;
      }
      if (at("{{-")) {
        strip_trailing();
        push(Tok::kOpenExpr, "{{", cur_);
        curly_depth_ = 0;
        cur_ += 3;
        continue;
      }
      while (size_t k = text::space_len(s_, cur_)) cur_ += k;
      if (cur_ >= s_.size()) break;
      if (at("-%}")) {
        push(Tok::kCloseStmt, "%}", cur_);
        cur_ += 3;
        skip_leading();
        continue;
      }
      if (at("-}}")) {
        push(Tok::kCloseExpr, "}}", cur_);
        cur_ += 3;
        skip_leading();
        continue;
      }
      const char c = s_[cur_];
      if (c == '-' || c == '+') {
        const Tok* lt = tokens_.empty() ? nullptr : &tokens_.back().type;
        if (!lt || *lt == Tok::kText) fail(std::string("Unexpected character: ") + c, pos(cur_));
        const bool binary = *lt == Tok::kIdent || *lt == Tok::kNumber || *lt == Tok::kString ||
                            *lt == Tok::kRParen || *lt == Tok::kRBracket;
        if (!binary) {
          const size_t start = cur_++;
          std::string num = digits();
          if (!num.empty() && cur_ + 1 < s_.size() && s_[cur_] == '.' && is_digit_char(s_[cur_ + 1])) {
            ++cur_;
            num += "." + digits();
          }
          push(num.empty() ? Tok::kUnary : Tok::kNumber, std::string(1, c) + num, start);
          continue;
        }
      }
      if (lex_operator()) continue;
      if (c == '\'' || c == '"') {
        const size_t start = cur_++;
        std::string str;
        while (true) {
          if (cur_ >= s_.size()) fail("Unexpected end of input in a string literal", pos(start));
          const char d = s_[cur_];
          if (d == c) break;
          if (d == '\\') {
            ++cur_;
            if (cur_ >= s_.size()) fail("Unexpected end of input", pos(start));
            const char e = s_[cur_++];
            if (e == 'x' || e == 'u') {
              const size_t len = e == 'x' ? 2 : 4;
              if (cur_ + len > s_.size()) fail(std::string("Invalid hexadecimal escape sequence: \\") + e, pos(cur_));
              uint32_t v = 0;
              for (size_t k = 0; k < len; ++k) {
                const char h = s_[cur_ + k];
                int d2 = is_digit_char(h) ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
                if (d2 < 0) fail(std::string("Invalid hexadecimal escape sequence: \\") + e + s_.substr(cur_, len), pos(cur_));
                v = v * 16 + d2;
              }
              cur_ += len;
              text::append_utf8(str, v);
              continue;
            }
            switch (e) {
              case 'n': str += '\n'; break;
              case 't': str += '\t'; break;
              case 'r': str += '\r'; break;
              case 'b': str += '\b'; break;
              case 'f': str += '\f'; break;
              case 'v': str += '\v'; break;
              case '\'': str += '\''; break;
              case '"': str += '"'; break;
              case '\\': str += '\\'; break;
              default: fail(std::string("Unexpected escaped character: ") + e, pos(cur_ - 2));
            }
            continue;
          }
          str += d;
          ++cur_;
          if (cur_ >= s_.size()) fail("Unexpected end of input in a string literal", pos(start));
        }
        ++cur_;
        push(Tok::kString, str, start);
        continue;
      }
      if (is_digit_char(c)) {
        const size_t start = cur_;
        std::string num = digits();
        if (!(tokens_.size() && tokens_.back().type == Tok::kDot) && cur_ + 1 < s_.size() && s_[cur_] == '.' &&
            is_digit_char(s_[cur_ + 1])) {
          ++cur_;
          num += "." + digits();
        }
        push(Tok::kNumber, num, start);
        continue;
      }
      if (is_word_char(c)) {
        const size_t start = cur_;
        while (cur_ < s_.size() && is_word_char(s_[cur_])) ++cur_;
        push(Tok::kIdent, s_.substr(start, cur_ - start), start);
        continue;
      }
      size_t p = cur_;
      const uint32_t cp = text::decode(s_, p);
      std::string ch;
      text::append_utf8(ch, cp);
      // A control character would print as nothing (or move the cursor): name its code point instead.
      if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) {
        char code[16];
        std::snprintf(code, sizeof code, "U+%04X", static_cast<unsigned>(cp));
        ch = code;
      }
      fail("Unexpected character: " + ch, pos(cur_));
    }
    return std::move(tokens_);
  }

 private:
  size_t pos(size_t p) const { return src_.orig[std::min(p, src_.orig.size() - 1)]; }
  bool at(const char* lit) const { return s_.compare(cur_, std::strlen(lit), lit) == 0; }
  void push(Tok t, std::string v, size_t p) { tokens_.push_back({t, std::move(v), pos(p)}); }
  std::string digits() {
    const size_t start = cur_;
    while (cur_ < s_.size() && is_digit_char(s_[cur_])) ++cur_;
    return s_.substr(start, cur_ - start);
  }
  void strip_trailing() {
    if (!tokens_.empty() && tokens_.back().type == Tok::kText) {
      tokens_.back().value = text::trim_end(tokens_.back().value);
      if (tokens_.back().value.empty()) tokens_.pop_back();
    }
  }
  void skip_leading() {
    while (size_t k = text::space_len(s_, cur_)) cur_ += k;
  }
  void lex_comment() {
    const size_t start = cur_;
    cur_ += 2;
    const bool strip_before = cur_ < s_.size() && s_[cur_] == '-';
    if (strip_before) ++cur_;
    std::string comment;
    while (!(cur_ + 1 < s_.size() && s_[cur_] == '#' && s_[cur_ + 1] == '}')) {
      if (cur_ + 2 >= s_.size()) fail("Missing end of comment tag", pos(start));
      comment += s_[cur_++];
    }
    const bool strip_after = !comment.empty() && comment.back() == '-';
    if (strip_before) strip_trailing();
    push(Tok::kComment, comment, start);
    cur_ += 2;
    if (strip_after) skip_leading();
  }
  bool lex_operator() {
    struct Op {
      const char* s;
      Tok t;
    };
    static const Op kOps[] = {
        {"{%", Tok::kOpenStmt}, {"%}", Tok::kCloseStmt}, {"{{", Tok::kOpenExpr}, {"}}", Tok::kCloseExpr},
        {"(", Tok::kLParen}, {")", Tok::kRParen}, {"{", Tok::kLBrace}, {"}", Tok::kRBrace},
        {"[", Tok::kLBracket}, {"]", Tok::kRBracket}, {",", Tok::kComma}, {".", Tok::kDot},
        {":", Tok::kColon}, {"|", Tok::kPipe}, {"<=", Tok::kComparison}, {">=", Tok::kComparison},
        {"==", Tok::kComparison}, {"!=", Tok::kComparison}, {"<", Tok::kComparison}, {">", Tok::kComparison},
        {"+", Tok::kAdditive}, {"-", Tok::kAdditive}, {"~", Tok::kAdditive}, {"**", Tok::kPower},
        {"*", Tok::kMultiplicative}, {"//", Tok::kMultiplicative}, {"/", Tok::kMultiplicative},
        {"%", Tok::kMultiplicative}, {"=", Tok::kEquals},
    };
    for (const Op& op : kOps) {
      if (op.t == Tok::kCloseExpr && curly_depth_ > 0) continue;
      if (!at(op.s)) continue;
      push(op.t, op.s, cur_);
      if (op.t == Tok::kOpenExpr) curly_depth_ = 0;
      if (op.t == Tok::kLBrace) ++curly_depth_;
      if (op.t == Tok::kRBrace) --curly_depth_;
      cur_ += std::strlen(op.s);
      return true;
    }
    return false;
  }

  const Source& src_;
  const std::string& s_;
  size_t cur_ = 0;
  int curly_depth_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// The syntax tree

enum class NT {
  kProgram, kText, kComment, kSet, kIf, kFor, kMacro, kCallStmt, kFilterStmt, kBreak, kContinue,
  kInt, kFloat, kStr, kIdent, kArray, kTuple, kObject, kMember, kCall, kUnary, kBinary, kFilter, kTest,
  kSelect, kTernary, kSlice, kKwarg, kSpread, kKwSpread,
};

using NodeP = std::shared_ptr<Template::Node>;

struct Template::Node {
  NT t;
  size_t pos = 0;
  std::string s;  // names, operators, string values
  double num = 0;
  bool flag = false;  // Member: computed; Test: negated; CallStmt: has caller parameters
  NodeP x, y, z;
  std::vector<NodeP> a, b;
};

namespace {

using Node = Template::Node;

NodeP make(NT t, size_t pos) {
  auto n = std::make_shared<Node>();
  n->t = t;
  n->pos = pos;
  return n;
}

class Parser {
 public:
  Parser(std::vector<Token> tokens, const Limits& limits, size_t end_pos)
      : toks_(std::move(tokens)), limits_(limits), end_pos_(end_pos) {}

  NodeP run() {
    auto program = make(NT::kProgram, 0);
    while (cur_ < toks_.size()) program->a.push_back(parse_any());
    return program;
  }

 private:
  struct DepthGuard {
    Parser* p;
    explicit DepthGuard(Parser* parser) : p(parser) {
      if (++p->depth_ > p->limits_.max_depth)
        fail("the template nests deeper than " + std::to_string(p->limits_.max_depth) + " levels", p->here());
    }
    ~DepthGuard() { --p->depth_; }
  };

  size_t here() const { return cur_ < toks_.size() ? toks_[cur_].pos : end_pos_; }
  const Token& peek() const {
    if (cur_ >= toks_.size()) fail("Unexpected end of template", end_pos_);
    return toks_[cur_];
  }
  bool is(Tok t, size_t ahead = 0) const { return cur_ + ahead < toks_.size() && toks_[cur_ + ahead].type == t; }
  bool is_ident(const char* name, size_t ahead = 0) const {
    return is(Tok::kIdent, ahead) && toks_[cur_ + ahead].value == name;
  }
  bool is_statement(std::initializer_list<const char*> names) const {
    if (!is(Tok::kOpenStmt) || !is(Tok::kIdent, 1)) {
      if (cur_ >= toks_.size()) {
        std::string want;
        for (const char* n : names) want += (want.empty() ? "" : " or ") + std::string("{% ") + n + " %}";
        fail("Unexpected end of template: expected " + want, end_pos_);
      }
      return false;
    }
    for (const char* n : names)
      if (toks_[cur_ + 1].value == n) return true;
    return false;
  }
  const Token& expect(Tok t, const char* what) {
    if (cur_ >= toks_.size()) fail(std::string("Unexpected end of template: ") + what, end_pos_);
    const Token& tok = toks_[cur_];
    if (tok.type != t)
      fail(std::string(what) + ", got " + describe(tok), tok.pos);
    ++cur_;
    return tok;
  }
  void expect_ident(const char* name) {
    if (!is_ident(name)) fail(std::string("Expected '") + name + "'", here());
    ++cur_;
  }

  NodeP parse_any() {
    DepthGuard g(this);
    const Token& t = peek();
    switch (t.type) {
      case Tok::kComment: {
        ++cur_;
        return make(NT::kComment, t.pos);
      }
      case Tok::kText: {
        auto n = make(NT::kText, t.pos);
        n->s = t.value;
        ++cur_;
        return n;
      }
      case Tok::kOpenStmt: return parse_statement();
      case Tok::kOpenExpr: {
        ++cur_;
        auto e = parse_expression();
        expect(Tok::kCloseExpr, "Expected '}}' to close the expression");
        return e;
      }
      default: fail("Unexpected " + describe(t), t.pos);
    }
  }

  std::vector<NodeP> parse_until(std::initializer_list<const char*> names) {
    std::vector<NodeP> body;
    while (!is_statement(names)) body.push_back(parse_any());
    return body;
  }

  void expect_end(const char* name) {
    expect(Tok::kOpenStmt, "Expected '{%'");
    expect_ident(name);
    expect(Tok::kCloseStmt, "Expected '%}'");
  }

  NodeP parse_statement() {
    const size_t start = peek().pos;
    expect(Tok::kOpenStmt, "Expected '{%'");
    if (!is(Tok::kIdent)) fail("Unknown statement, got " + describe(peek()), here());
    const std::string name = peek().value;
    ++cur_;
    if (name == "set") {
      auto n = make(NT::kSet, start);
      n->x = parse_expression_sequence(false);
      if (is(Tok::kEquals)) {
        ++cur_;
        n->y = parse_expression_sequence(false);
      } else {
        expect(Tok::kCloseStmt, "Expected '%}' or '=' in set");
        n->a = parse_until({"endset"});
        expect(Tok::kOpenStmt, "Expected '{%'");
        expect_ident("endset");
      }
      expect(Tok::kCloseStmt, "Expected '%}' to close set");
      return n;
    }
    if (name == "if") {
      auto n = parse_if(start);
      expect_end("endif");
      return n;
    }
    if (name == "macro") {
      auto n = make(NT::kMacro, start);
      if (!is(Tok::kIdent)) fail("Expected identifier following macro statement", here());
      n->s = peek().value;
      ++cur_;
      n->a = parse_args(true);
      expect(Tok::kCloseStmt, "Expected '%}' after the macro's parameters");
      n->b = parse_until({"endmacro"});
      expect_end("endmacro");
      return n;
    }
    if (name == "for") {
      auto n = make(NT::kFor, start);
      n->x = parse_expression_sequence(true);
      if (n->x->t != NT::kIdent && n->x->t != NT::kTuple)
        fail("Expected identifier/tuple for the loop variable", n->x->pos);
      if (!is_ident("in")) fail("Expected `in` keyword following loop variable", here());
      ++cur_;
      n->y = parse_expression();
      expect(Tok::kCloseStmt, "Expected '%}' to close for");
      n->a = parse_until({"endfor", "else"});
      if (is_statement({"else"})) {
        cur_ += 2;
        expect(Tok::kCloseStmt, "Expected '%}' after else");
        n->b = parse_until({"endfor"});
      }
      expect_end("endfor");
      return n;
    }
    if (name == "call") {
      auto n = make(NT::kCallStmt, start);
      if (is(Tok::kLParen)) {
        n->flag = true;
        n->a = parse_args(true);
      }
      auto callee = parse_primary();
      if (callee->t != NT::kIdent) fail("Expected identifier following call statement", callee->pos);
      auto call = make(NT::kCall, callee->pos);
      call->x = callee;
      call->a = parse_args(false);
      n->x = call;
      expect(Tok::kCloseStmt, "Expected '%}' to close call");
      n->b = parse_until({"endcall"});
      expect_end("endcall");
      return n;
    }
    if (name == "break" || name == "continue") {
      expect(Tok::kCloseStmt, "Expected '%}'");
      return make(name == "break" ? NT::kBreak : NT::kContinue, start);
    }
    if (name == "filter") {
      auto n = make(NT::kFilterStmt, start);
      auto f = parse_primary();
      if (f->t == NT::kIdent && is(Tok::kLParen)) f = parse_call(f);
      n->x = f;
      expect(Tok::kCloseStmt, "Expected '%}' to close filter");
      n->a = parse_until({"endfilter"});
      expect_end("endfilter");
      return n;
    }
    fail("Unknown statement type: " + name, toks_[cur_ - 1].pos);
  }

  NodeP parse_if(size_t start) {
    auto n = make(NT::kIf, start);
    n->x = parse_expression();
    expect(Tok::kCloseStmt, "Expected '%}' to close if");
    n->a = parse_until({"elif", "else", "endif"});
    if (is_statement({"elif"})) {
      const size_t p = peek().pos;
      cur_ += 2;
      n->b.push_back(parse_if(p));
    } else if (is_statement({"else"})) {
      cur_ += 2;
      expect(Tok::kCloseStmt, "Expected '%}' after else");
      n->b = parse_until({"endif"});
    }
    return n;
  }

  NodeP parse_expression_sequence(bool primary) {
    const size_t start = here();
    std::vector<NodeP> items{primary ? parse_primary() : parse_expression()};
    const bool tuple = is(Tok::kComma);
    while (tuple) {
      ++cur_;
      items.push_back(primary ? parse_primary() : parse_expression());
      if (!is(Tok::kComma)) break;
    }
    if (!tuple) return items[0];
    auto n = make(NT::kTuple, start);
    n->a = std::move(items);
    return n;
  }

  NodeP parse_expression() {
    DepthGuard g(this);
    return parse_if_expression();
  }

  NodeP parse_if_expression() {
    auto a = parse_or();
    if (is_ident("if")) {
      const size_t p = here();
      ++cur_;
      auto test = parse_or();
      if (is_ident("else")) {
        ++cur_;
        auto n = make(NT::kTernary, p);
        n->x = test;
        n->y = a;
        n->z = parse_if_expression();
        return n;
      }
      auto n = make(NT::kSelect, p);
      n->x = a;
      n->y = test;
      return n;
    }
    return a;
  }

  NodeP binary(const std::string& op, size_t pos, NodeP l, NodeP r) {
    auto n = make(NT::kBinary, pos);
    n->s = op;
    n->x = std::move(l);
    n->y = std::move(r);
    return n;
  }

  NodeP parse_or() {
    auto left = parse_and();
    while (is_ident("or")) {
      const size_t p = here();
      ++cur_;
      left = binary("or", p, left, parse_and());
    }
    return left;
  }
  NodeP parse_and() {
    auto left = parse_not();
    while (is_ident("and")) {
      const size_t p = here();
      ++cur_;
      left = binary("and", p, left, parse_not());
    }
    return left;
  }
  NodeP parse_not() {
    if (is_ident("not")) {
      DepthGuard g(this);
      const size_t p = here();
      ++cur_;
      auto n = make(NT::kUnary, p);
      n->s = "not";
      n->x = parse_not();
      return n;
    }
    return parse_comparison();
  }
  NodeP parse_comparison() {
    auto left = parse_additive();
    while (true) {
      const size_t p = here();
      std::string op;
      if (is_ident("not") && is_ident("in", 1)) {
        op = "not in";
        cur_ += 2;
      } else if (is_ident("in")) {
        op = "in";
        ++cur_;
      } else if (is(Tok::kComparison)) {
        op = toks_[cur_++].value;
      } else {
        break;
      }
      left = binary(op, p, left, parse_additive());
    }
    return left;
  }
  NodeP parse_additive() {
    auto left = parse_multiplicative();
    while (is(Tok::kAdditive)) {
      const Token& t = toks_[cur_++];
      left = binary(t.value, t.pos, left, parse_multiplicative());
    }
    return left;
  }
  NodeP parse_multiplicative() {
    auto left = parse_power();
    while (is(Tok::kMultiplicative)) {
      const Token& t = toks_[cur_++];
      left = binary(t.value, t.pos, left, parse_power());
    }
    return left;
  }
  NodeP parse_power() {
    auto left = parse_test();
    while (is(Tok::kPower)) {
      const Token& t = toks_[cur_++];
      left = binary("**", t.pos, left, parse_test());
    }
    return left;
  }
  NodeP parse_test() {
    auto operand = parse_filter();
    while (is_ident("is")) {
      const size_t p = here();
      ++cur_;
      const bool negate = is_ident("not");
      if (negate) ++cur_;
      auto name = parse_primary();
      if (name->t != NT::kIdent) fail("Expected identifier for the test", name->pos);
      auto n = make(NT::kTest, p);
      n->x = operand;
      n->s = name->s;
      n->flag = negate;
      operand = n;
    }
    return operand;
  }
  NodeP parse_filter() {
    auto operand = parse_unary_sign();
    while (is(Tok::kPipe)) {
      const size_t p = here();
      ++cur_;
      auto f = parse_primary();
      if (f->t != NT::kIdent) fail("Expected identifier for the filter", f->pos);
      if (is(Tok::kLParen)) f = parse_call(f);
      auto n = make(NT::kFilter, p);
      n->x = operand;
      n->y = f;
      operand = n;
    }
    return operand;
  }
  NodeP parse_unary_sign() {
    if (cur_ < toks_.size() && (is(Tok::kUnary) || is(Tok::kAdditive)) &&
        (toks_[cur_].value == "-" || toks_[cur_].value == "+")) {
      DepthGuard g(this);
      const Token& t = toks_[cur_++];
      auto n = make(NT::kUnary, t.pos);
      n->s = t.value;
      n->x = parse_unary_sign();
      return n;
    }
    auto member = parse_member(parse_primary());
    if (is(Tok::kLParen)) return parse_call(member);
    return member;
  }
  NodeP parse_call(NodeP callee) {
    DepthGuard g(this);
    auto n = make(NT::kCall, here());
    n->x = std::move(callee);
    n->a = parse_args(false);
    NodeP e = parse_member(n);
    if (is(Tok::kLParen)) e = parse_call(e);
    return e;
  }
  std::vector<NodeP> parse_args(bool parameters) {
    expect(Tok::kLParen, "Expected '(' for the argument list");
    std::vector<NodeP> args;
    std::set<std::string> names;
    bool saw_keyword = false, saw_spread = false;
    while (!is(Tok::kRParen)) {
      if (cur_ >= toks_.size()) fail("Unexpected end of template in an argument list", end_pos_);
      const size_t p = here();
      const bool kw_spread = is(Tok::kPower);
      const bool spread = is(Tok::kMultiplicative) && toks_[cur_].value == "*";
      if (parameters && (kw_spread || spread)) fail("Argument unpacking is not allowed in parameter declarations", p);
      if (kw_spread) {
        ++cur_;
        auto n = make(NT::kKwSpread, p);
        n->x = parse_expression();
        args.push_back(n);
        if (is(Tok::kComma)) ++cur_;
        if (!is(Tok::kRParen)) fail("Expected ')': `**` must be applied to the final argument", here());
        break;
      }
      NodeP arg;
      if (spread) {
        if (saw_spread) fail("Only one `*` argument unpacking is allowed", p);
        saw_spread = true;
        ++cur_;
        arg = make(NT::kSpread, p);
        arg->x = parse_expression();
      } else {
        arg = parse_expression();
        if (is(Tok::kEquals)) {
          ++cur_;
          if (arg->t != NT::kIdent)
            fail(parameters ? "Expected identifier for parameter declaration" : "Expected identifier for keyword argument", arg->pos);
          auto kw = make(NT::kKwarg, arg->pos);
          kw->s = arg->s;
          kw->x = parse_expression();
          arg = kw;
        }
        if (parameters) {
          if (arg->t != NT::kIdent && arg->t != NT::kKwarg) fail("Expected identifier for parameter declaration", arg->pos);
          if (!names.insert(arg->s).second) fail("Duplicate parameter name: " + arg->s, arg->pos);
        }
        if (arg->t == NT::kKwarg) {
          saw_keyword = true;
        } else if (saw_keyword) {
          fail(parameters ? "Non-default argument follows default argument"
                          : "Positional arguments must come before keyword arguments",
               arg->pos);
        } else if (saw_spread) {
          fail("Positional arguments must not follow `*` argument unpacking", arg->pos);
        }
      }
      args.push_back(arg);
      if (is(Tok::kComma)) ++cur_;
    }
    expect(Tok::kRParen, "Expected ')' to close the argument list");
    return args;
  }
  NodeP parse_member(NodeP object) {
    while (is(Tok::kDot) || is(Tok::kLBracket)) {
      DepthGuard g(this);
      const Token& op = toks_[cur_++];
      auto n = make(NT::kMember, op.pos);
      n->x = object;
      n->flag = op.type == Tok::kLBracket;
      if (n->flag) {
        std::vector<NodeP> slices;
        bool is_slice = false;
        while (!is(Tok::kRBracket)) {
          if (cur_ >= toks_.size()) fail("Unexpected end of template: expected ']'", end_pos_);
          if (is(Tok::kColon)) {
            slices.push_back(nullptr);
            ++cur_;
            is_slice = true;
          } else {
            slices.push_back(parse_expression());
            if (is(Tok::kColon)) {
              ++cur_;
              is_slice = true;
            }
          }
        }
        if (slices.empty()) fail("Expected at least one argument for member/slice expression", op.pos);
        if (is_slice) {
          if (slices.size() > 3) fail("Expected 0-3 arguments for slice expression", op.pos);
          auto sl = make(NT::kSlice, op.pos);
          sl->x = slices[0];
          if (slices.size() > 1) sl->y = slices[1];
          if (slices.size() > 2) sl->z = slices[2];
          n->y = sl;
        } else {
          n->y = slices[0];
        }
        expect(Tok::kRBracket, "Expected ']'");
      } else {
        auto prop = parse_primary();
        if (prop->t != NT::kIdent && prop->t != NT::kInt)
          fail("Expected identifier or integer following dot operator", prop->pos);
        n->y = prop;
      }
      object = n;
    }
    return object;
  }
  NodeP parse_primary() {
    DepthGuard g(this);
    if (cur_ >= toks_.size()) fail("Unexpected end of template: expected an expression", end_pos_);
    const Token& t = toks_[cur_++];
    switch (t.type) {
      case Tok::kNumber: {
        const bool is_float = t.value.find('.') != std::string::npos;
        auto n = make(is_float ? NT::kFloat : NT::kInt, t.pos);
        n->num = std::strtod(t.value.c_str(), nullptr);
        return n;
      }
      case Tok::kString: {
        auto n = make(NT::kStr, t.pos);
        n->s = t.value;
        while (is(Tok::kString)) n->s += toks_[cur_++].value;
        return n;
      }
      case Tok::kIdent: {
        auto n = make(NT::kIdent, t.pos);
        n->s = t.value;
        return n;
      }
      case Tok::kLParen: {
        auto e = parse_expression_sequence(false);
        expect(Tok::kRParen, "Expected ')'");
        return e;
      }
      case Tok::kLBracket: {
        auto n = make(NT::kArray, t.pos);
        while (!is(Tok::kRBracket)) {
          if (cur_ >= toks_.size()) fail("Unexpected end of template: expected ']'", end_pos_);
          n->a.push_back(parse_expression());
          if (is(Tok::kComma)) ++cur_;
        }
        ++cur_;
        return n;
      }
      case Tok::kLBrace: {
        auto n = make(NT::kObject, t.pos);
        while (!is(Tok::kRBrace)) {
          if (cur_ >= toks_.size()) fail("Unexpected end of template: expected '}'", end_pos_);
          n->a.push_back(parse_expression());
          expect(Tok::kColon, "Expected ':' between key and value in an object literal");
          n->b.push_back(parse_expression());
          if (is(Tok::kComma)) ++cur_;
        }
        ++cur_;
        return n;
      }
      default:
        fail("Unexpected token: " + describe(t), t.pos);
    }
  }

  std::vector<Token> toks_;
  const Limits& limits_;
  size_t end_pos_;
  size_t cur_ = 0;
  int depth_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// The interpreter

struct Env {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Env> parent;

  explicit Env(std::shared_ptr<Env> p = nullptr) : parent(std::move(p)) {}
  Value lookup(const std::string& name) const {
    for (const Env* e = this; e; e = e->parent.get()) {
      auto it = e->vars.find(name);
      if (it != e->vars.end()) return it->second;
    }
    return Value::undefined();
  }
  void set(const std::string& name, Value v) { vars[name] = std::move(v); }
};

namespace {

using EnvP = std::shared_ptr<Env>;

// kwargs passed as the last argument, split off.
Value* kwargs_of(std::vector<Value>& args) {
  if (!args.empty() && args.back().kind == Kind::kObject && args.back().obj->kind == ObjectKind::kKwargs)
    return &args.back();
  return nullptr;
}

// Does `node` (a macro body) read `name` (kwargs / varargs)? A simple approximation of the reference's scan.
bool reads_name(const NodeP& node, const std::string& name) {
  if (!node) return false;
  if (node->t == NT::kIdent && node->s == name) return true;
  if (node->t == NT::kMember && !node->flag) return reads_name(node->x, name);
  for (const auto* p : {&node->x, &node->y, &node->z})
    if (reads_name(*p, name)) return true;
  for (const auto* v : {&node->a, &node->b})
    for (const auto& c : *v)
      if (reads_name(c, name)) return true;
  return false;
}

std::string format_time(const std::tm& tm, const std::string& fmt) {
  static const char* kShort[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  static const char* kLong[] = {"January", "February", "March", "April", "May", "June", "July", "August",
                                "September", "October", "November", "December"};
  auto pad2 = [](int n) { return (n < 10 ? "0" : "") + std::to_string(n); };
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] == '%' && i + 1 < fmt.size()) {
      const char c = fmt[i + 1];
      std::string rep;
      bool known = true;
      switch (c) {
        case 'Y': rep = std::to_string(tm.tm_year + 1900); break;
        case 'm': rep = pad2(tm.tm_mon + 1); break;
        case 'd': rep = pad2(tm.tm_mday); break;
        case 'b': rep = kShort[tm.tm_mon % 12]; break;
        case 'B': rep = kLong[tm.tm_mon % 12]; break;
        case 'H': rep = pad2(tm.tm_hour); break;
        case 'M': rep = pad2(tm.tm_min); break;
        case '%': rep = "%"; break;
        default: known = false;
      }
      if (known) {
        out += rep;
        ++i;
        continue;
      }
    }
    out += fmt[i];
  }
  return out;
}

class Interpreter {
 public:
  Interpreter(const RenderOptions& options) : opt_(options), lim_(options.limits) {}

  std::string run(const NodeP& program, const EnvP& env) { return eval_block(program->a, env); }

  EnvP make_globals() {
    auto env = std::make_shared<Env>();
    env->set("namespace", Value::function([this](std::vector<Value>& args, const EnvP&) { return make_namespace(args); }));
    env->set("false", Value::boolean(false));
    env->set("true", Value::boolean(true));
    env->set("none", Value::null());
    env->set("False", Value::boolean(false));
    env->set("True", Value::boolean(true));
    env->set("None", Value::null());
    env->set("raise_exception", Value::function([this](std::vector<Value>& args, const EnvP&) -> Value {
      fail(args.empty() ? std::string("undefined") : raw_string(args[0], lim_.max_output_bytes));
    }));
    env->set("range", Value::function([this](std::vector<Value>& args, const EnvP&) { return range(args); }));
    env->set("strftime_now", Value::function([this](std::vector<Value>& args, const EnvP&) {
      std::tm tm{};
      if (opt_.now) {
        tm = opt_.now();
      } else {
        const std::time_t t = std::time(nullptr);
        localtime_r(&t, &tm);
      }
      const std::string fmt = args.empty() ? "undefined" : raw_string(args[0], lim_.max_output_bytes);
      return Value::string(format_time(tm, fmt));
    }));
    return env;
  }

 private:
  struct DepthGuard {
    Interpreter* in;
    DepthGuard(Interpreter* i, size_t pos) : in(i) {
      if (++in->depth_ > in->lim_.max_depth)
        fail("rendering nests deeper than " + std::to_string(in->lim_.max_depth) +
                 " levels (runaway recursion?)", pos);
    }
    ~DepthGuard() { --in->depth_; }
  };

  void check_size(size_t n) const {
    if (n > lim_.max_output_bytes)
      fail("the rendered text exceeds the limit of " + std::to_string(lim_.max_output_bytes) + " bytes");
  }

  Value make_namespace(std::vector<Value>& args) {
    std::vector<Value> positional = args;
    Value kwargs;
    if (kwargs_of(positional)) {
      kwargs = positional.back();
      positional.pop_back();
    }
    if (positional.size() > 1)
      fail("namespace expected at most 1 argument, got " + std::to_string(positional.size()));
    Value ns = Value::object(ObjectKind::kNamespace);
    if (positional.size() == 1) {
      const Value& src = positional[0];
      if (src.is_mapping()) {
        for (const auto& [k, v] : src.obj->map.entries()) ns.obj->map.set(k, v);
      } else if (src.is_array()) {
        for (const Value& pair : src.arr->items) {
          std::vector<Value> kv;
          if (pair.is_array()) kv = pair.arr->items;
          else if (pair.is_string())
            for (auto& c : text::code_points(pair.str)) kv.push_back(Value::string(c));
          if (kv.size() != 2) fail("namespace expected an object or an iterable of [key, value] pairs");
          if (!kv[0].is_string()) fail("namespace keys must be strings");
          ns.obj->map.set(kv[0].str, kv[1]);
        }
      } else {
        fail(std::string("'") + src.type_name() + "' object is not iterable");
      }
    }
    if (!kwargs.is_undefined())
      for (const auto& [k, v] : kwargs.obj->map.entries()) ns.obj->map.set(k, v);
    return ns;
  }

  Value range(std::vector<Value>& args) {
    std::vector<double> nums;
    for (const Value& a : args) {
      if (a.kind == Kind::kObject && a.obj->kind == ObjectKind::kKwargs) continue;
      if (!a.is_number()) fail(std::string("range() expects numbers, got ") + a.type_name());
      nums.push_back(a.num);
    }
    if (nums.empty()) fail("range() expects at least one argument");
    double start = 0, stop = nums[0], step = 1;
    if (nums.size() >= 2) start = nums[0], stop = nums[1];
    if (nums.size() >= 3) step = nums[2];
    if (step == 0) fail("range() step must not be zero");
    std::vector<Value> out;
    for (double i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (out.size() >= lim_.max_range)
        fail("range() would have more than " + std::to_string(lim_.max_range) + " elements");
      out.push_back(std::floor(i) == i ? Value::integer(i) : Value::floating(i));
    }
    return Value::array(std::move(out));
  }

  std::string eval_block(const std::vector<NodeP>& body, const EnvP& env) {
    std::string out;
    for (const auto& stmt : body) {
      Value v = eval(stmt, env);
      if (v.kind == Kind::kNull || v.kind == Kind::kUndefined) continue;
      if (v.kind == Kind::kString)
        out += v.str;
      else
        out += to_output(v, lim_.max_output_bytes);
      check_size(out.size());
    }
    return out;
  }

 public:
  Value eval(const NodeP& n, const EnvP& env) {
    if (!n) return Value::undefined();
    DepthGuard g(this, n->pos);
    try {
      Value v = eval_node(n, env);
      charge(v);
      return v;
    } catch (JinjaError& e) {
      if (e.pos == kNoPos) e.pos = n->pos;
      throw;
    }
  }

 private:
  Value eval_node(const NodeP& n, const EnvP& env) {
    switch (n->t) {
      case NT::kProgram: return Value::string(eval_block(n->a, env));
      case NT::kText:
      case NT::kStr: return Value::string(n->s);
      case NT::kComment: return Value::null();
      case NT::kInt: return Value::integer(n->num);
      case NT::kFloat: return Value::floating(n->num);
      case NT::kIdent: return env->lookup(n->s);
      case NT::kArray:
      case NT::kTuple: {
        std::vector<Value> items;
        for (const auto& c : n->a) items.push_back(eval(c, env));
        return Value::array(std::move(items), n->t == NT::kTuple);
      }
      case NT::kObject: {
        Value o = Value::object();
        for (size_t i = 0; i < n->a.size(); ++i) {
          Value k = eval(n->a[i], env);
          if (!k.is_string()) fail(std::string("Object keys must be strings: got ") + k.type_name(), n->a[i]->pos);
          o.obj->map.set(k.str, eval(n->b[i], env));
        }
        return o;
      }
      case NT::kSet: return eval_set(n, env);
      case NT::kIf: {
        Value test = eval(n->x, env);
        return Value::string(eval_block(test.truthy() ? n->a : n->b, env));
      }
      case NT::kFor: return eval_for(n, env);
      case NT::kMacro: return eval_macro(n, env);
      case NT::kCallStmt: return eval_call_statement(n, env);
      case NT::kFilterStmt: {
        Value body = Value::string(eval_block(n->a, env));
        return apply_filter(body, n->x, env);
      }
      case NT::kBreak: throw BreakSignal{};
      case NT::kContinue: throw ContinueSignal{};
      case NT::kMember: return eval_member(n, env);
      case NT::kCall: {
        auto [args, kwargs] = eval_args(n->a, env);
        if (kwargs.obj->map.size() > 0) args.push_back(kwargs);
        Value fn = eval(n->x, env);
        if (!fn.is_function()) fail(std::string("Cannot call something that is not a function: got ") + fn.type_name());
        return (*fn.fn)(args, env);
      }
      case NT::kUnary: {
        Value v = eval(n->x, env);
        if (n->s == "not") return Value::boolean(!v.truthy());
        if (!numeric_like(v)) fail("Unknown operator \"" + n->s + "\" for " + v.type_name());
        const double r = (n->s == "-" ? -1 : 1) * numeric_value(v);
        return v.kind == Kind::kFloat ? Value::floating(r) : Value::integer(r);
      }
      case NT::kBinary: return eval_binary(n, env);
      case NT::kFilter: {
        Value operand = eval(n->x, env);
        return apply_filter(operand, n->y, env);
      }
      case NT::kTest: {
        Value operand = eval(n->x, env);
        const bool r = run_test(n->s, operand, nullptr);
        return Value::boolean(n->flag ? !r : r);
      }
      case NT::kSelect: {
        if (!eval(n->y, env).truthy()) return Value::undefined();
        return eval(n->x, env);
      }
      case NT::kTernary: return eval(n->x, env).truthy() ? eval(n->y, env) : eval(n->z, env);
      default: fail("Unknown node type");
    }
  }

  std::pair<std::vector<Value>, Value> eval_args(const std::vector<NodeP>& args, const EnvP& env) {
    std::vector<Value> positional;
    Value kwargs = Value::object(ObjectKind::kKwargs);
    for (const auto& a : args) {
      if (a->t == NT::kSpread) {
        Value v = eval(a->x, env);
        if (!v.is_array()) fail(std::string("Cannot unpack non-iterable type: ") + v.type_name(), a->pos);
        for (const auto& item : v.arr->items) positional.push_back(item);
      } else if (a->t != NT::kKwarg && a->t != NT::kKwSpread) {
        positional.push_back(eval(a, env));
      }
    }
    auto add = [&](const std::string& k, Value v, size_t pos) {
      if (kwargs.obj->map.find(k)) fail("Got multiple values for keyword argument '" + k + "'", pos);
      kwargs.obj->map.set(k, std::move(v));
    };
    for (const auto& a : args) {
      if (a->t == NT::kKwarg) {
        add(a->s, eval(a->x, env), a->pos);
      } else if (a->t == NT::kKwSpread) {
        Value v = eval(a->x, env);
        if (!v.is_mapping()) fail(std::string("Argument after ** must be a mapping, not ") + v.type_name(), a->pos);
        for (const auto& [k, val] : v.obj->map.entries()) add(k, val, a->pos);
      }
    }
    return {std::move(positional), std::move(kwargs)};
  }

  Value eval_set(const NodeP& n, const EnvP& env) {
    Value rhs = n->y ? eval(n->y, env) : Value::string(eval_block(n->a, env));
    const NodeP& lhs = n->x;
    if (lhs->t == NT::kIdent) {
      env->set(lhs->s, std::move(rhs));
    } else if (lhs->t == NT::kTuple) {
      if (!rhs.is_array()) fail(std::string("Cannot unpack non-iterable type in set: ") + rhs.type_name());
      if (rhs.arr->items.size() != lhs->a.size())
        fail(std::string("Too ") + (lhs->a.size() > rhs.arr->items.size() ? "few" : "many") + " items to unpack in set");
      for (size_t i = 0; i < lhs->a.size(); ++i) {
        if (lhs->a[i]->t != NT::kIdent) fail("Cannot unpack to non-identifier in set", lhs->a[i]->pos);
        env->set(lhs->a[i]->s, rhs.arr->items[i]);
      }
    } else if (lhs->t == NT::kMember) {
      Value object = eval(lhs->x, env);
      if (!object.is_namespace()) fail("cannot assign attribute on non-namespace object", lhs->pos);
      if (lhs->y->t != NT::kIdent || lhs->flag) fail("Cannot assign to member with non-identifier property", lhs->pos);
      object.obj->map.set(lhs->y->s, std::move(rhs));
    } else {
      fail("Invalid left-hand side in set", lhs->pos);
    }
    return Value::null();
  }

  void check_cancelled() const {
    if (opt_.cancel && opt_.cancel->load(std::memory_order_relaxed)) fail("the render was cancelled");
  }

  // Loop iterations and macro calls share one budget: a macro that calls itself twice per level ran 2^depth
  // calls without a loop (f(40) did not finish), while the depth limit only bounds each chain of calls.
  void count_iteration() {
    check_cancelled();
    if (++iterations_ > lim_.max_loop_iterations)
      fail("the template ran more than " + std::to_string(lim_.max_loop_iterations) +
           " loop iterations and macro calls");
  }

  // Counts a value's strings and list items, made or copied, toward the render's byte budget
  // (Limits::max_string_bytes).
  void charge(const Value& v, uint64_t copies = 1) {
    const uint64_t bytes = v.is_string() ? v.str.size() : v.is_array() ? v.arr->bytes : 0;
    if (bytes == 0) return;
    check_cancelled();
    const uint64_t room = lim_.max_string_bytes - std::min(string_bytes_, lim_.max_string_bytes);
    string_bytes_ = bytes > room / copies ? lim_.max_string_bytes + 1 : string_bytes_ + copies * bytes;
    if (string_bytes_ > lim_.max_string_bytes)
      fail("the template made or copied more than " + std::to_string(lim_.max_string_bytes) +
           " bytes of strings and lists (a runaway loop over long text or long lists?)");
  }

  Value eval_for(const NodeP& n, const EnvP& env) {
    auto scope = std::make_shared<Env>(env);
    NodeP test;
    Value iterable;
    if (n->y->t == NT::kSelect) {
      iterable = eval(n->y->x, scope);
      test = n->y->y;
    } else {
      iterable = eval(n->y, scope);
    }
    if (!iterable.is_array() && !iterable.is_mapping())
      fail(std::string("Expected iterable or object type in for loop: got ") + iterable.type_name(), n->y->pos);
    std::vector<Value> source;
    if (iterable.is_mapping()) {
      for (const auto& [k, v] : iterable.obj->map.entries()) source.push_back(Value::string(k));
    } else {
      source = iterable.arr->items;
    }
    auto bind = [&](const EnvP& target, const Value& current) {
      if (n->x->t == NT::kIdent) {
        target->set(n->x->s, current);
        return;
      }
      if (current.kind != Kind::kArray || current.arr->is_tuple)
        fail(std::string("Cannot unpack non-iterable type: ") + current.type_name(), n->x->pos);
      const auto& vars = n->x->a;
      if (vars.size() != current.arr->items.size())
        fail(std::string("Too ") + (vars.size() > current.arr->items.size() ? "few" : "many") + " items to unpack",
             n->x->pos);
      for (size_t j = 0; j < vars.size(); ++j) {
        if (vars[j]->t != NT::kIdent) fail("Cannot unpack non-identifier type", vars[j]->pos);
        target->set(vars[j]->s, current.arr->items[j]);
      }
    };
    std::vector<Value> items;
    for (const Value& current : source) {
      count_iteration();
      charge(current, 2);  // into `source` above, and into `items` or the test's scope
      if (test) {
        auto loop_scope = std::make_shared<Env>(scope);
        bind(loop_scope, current);
        if (!eval(test, loop_scope).truthy()) continue;
      }
      items.push_back(current);
    }
    std::string out;
    bool no_iteration = true;
    const size_t len = items.size();
    for (size_t i = 0; i < len; ++i) {
      count_iteration();
      Value loop = Value::object();
      auto& m = loop.obj->map;
      m.set("index", Value::integer(i + 1));
      m.set("index0", Value::integer(i));
      m.set("revindex", Value::integer(len - i));
      m.set("revindex0", Value::integer(len - i - 1));
      m.set("first", Value::boolean(i == 0));
      m.set("last", Value::boolean(i == len - 1));
      m.set("length", Value::integer(len));
      m.set("previtem", i > 0 ? items[i - 1] : Value::undefined());
      m.set("nextitem", i + 1 < len ? items[i + 1] : Value::undefined());
      charge(items[i], 3);  // the loop variable, loop.previtem and loop.nextitem
      scope->set("loop", loop);
      bind(scope, items[i]);
      try {
        out += eval_block(n->a, scope);
        check_size(out.size());
      } catch (ContinueSignal&) {
        continue;
      } catch (BreakSignal&) {
        break;
      }
      no_iteration = false;
    }
    if (no_iteration) out += eval_block(n->b, scope);
    return Value::string(std::move(out));
  }

  void bind_macro_args(const std::string& display, const std::vector<NodeP>& params, bool wants_kwargs,
                       bool wants_varargs, std::vector<Value> args, const EnvP& scope) {
    Value kwargs = Value::object();
    if (kwargs_of(args)) {
      for (const auto& [k, v] : args.back().obj->map.entries()) kwargs.obj->map.set(k, v);
      args.pop_back();
    }
    std::vector<std::pair<std::string, NodeP>> pending;
    std::unordered_set<std::string> consumed;
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string& name = params[i]->s;
      const NodeP def = params[i]->t == NT::kKwarg ? params[i]->x : nullptr;
      Value value;
      bool have = i < args.size();
      if (have) value = args[i];
      if (!have) {
        if (const Value* kv = kwargs.obj->map.find(name)) {
          value = *kv;
          have = true;
          consumed.insert(name);
        }
      }
      if (!have && def) pending.emplace_back(name, def);
      scope->set(name, have ? value : Value::undefined());
    }
    Value rest_kwargs = Value::object();
    for (const auto& [k, v] : kwargs.obj->map.entries())
      if (!consumed.count(k)) rest_kwargs.obj->map.set(k, v);
    if (wants_kwargs) {
      scope->set("kwargs", rest_kwargs);
    } else if (rest_kwargs.obj->map.size() > 0) {
      fail("macro " + display + " takes no keyword argument '" + rest_kwargs.obj->map.entries()[0].first + "'");
    }
    if (wants_varargs) {
      std::vector<Value> extra;
      for (size_t i = params.size(); i < args.size(); ++i) extra.push_back(args[i]);
      scope->set("varargs", Value::array(std::move(extra)));
    } else if (args.size() > params.size()) {
      fail("macro " + display + " takes not more than " + std::to_string(params.size()) + " argument(s)");
    }
    for (const auto& [name, def] : pending) scope->set(name, eval(def, scope));
  }

  Value eval_macro(const NodeP& n, const EnvP& env) {
    bool kw = false, va = false;
    for (const auto& stmt : n->b) kw = kw || reads_name(stmt, "kwargs"), va = va || reads_name(stmt, "varargs");
    NodeP node = n;
    env->set(n->s, Value::function([this, node, kw, va](std::vector<Value>& args, const EnvP& caller_env) {
      count_iteration();
      auto scope = std::make_shared<Env>(caller_env);
      bind_macro_args("'" + node->s + "'", node->a, kw, va, args, scope);
      return Value::string(eval_block(node->b, scope));
    }));
    return Value::null();
  }

  Value eval_call_statement(const NodeP& n, const EnvP& env) {
    bool kw = false, va = false;
    for (const auto& stmt : n->b) kw = kw || reads_name(stmt, "kwargs"), va = va || reads_name(stmt, "varargs");
    NodeP node = n;
    EnvP defining = env;
    Value caller = Value::function([this, node, kw, va, defining](std::vector<Value>& args, const EnvP&) {
      count_iteration();
      auto scope = std::make_shared<Env>(defining);
      bind_macro_args("None", node->a, kw, va, args, scope);
      return Value::string(eval_block(node->b, scope));
    });
    auto [args, kwargs] = eval_args(n->x->a, env);
    args.push_back(kwargs);
    Value fn = eval(n->x->x, env);
    if (!fn.is_function()) fail(std::string("Cannot call something that is not a function: got ") + fn.type_name());
    auto scope = std::make_shared<Env>(env);
    scope->set("caller", caller);
    return (*fn.fn)(args, scope);
  }

  Value eval_slice(const Value& object, const NodeP& sl, const EnvP& env) {
    if (!object.is_array() && !object.is_string()) fail("Slice object must be an array or string");
    Value start = eval(sl->x, env), stop = eval(sl->y, env), step = eval(sl->z, env);
    for (const Value* v : {&start, &stop, &step})
      if (v->kind != Kind::kInt && !v->is_undefined()) fail("Slice indices must be integers or undefined");
    std::vector<std::string> chars;
    const size_t size = object.is_array() ? object.arr->items.size() : (chars = text::code_points(object.str)).size();
    const double len = static_cast<double>(size);
    const double st = step.is_undefined() ? 1 : step.num;
    double a, b;
    if (st >= 0) {
      a = start.is_undefined() ? 0 : start.num;
      a = a < 0 ? std::max(len + a, 0.0) : std::min(a, len);
      b = stop.is_undefined() ? len : stop.num;
      b = b < 0 ? std::max(len + b, 0.0) : std::min(b, len);
    } else {
      a = start.is_undefined() ? len - 1 : start.num;
      a = a < 0 ? std::max(len + a, -1.0) : std::min(a, len - 1);
      b = stop.is_undefined() ? -1 : stop.num;
      b = b < -1 ? std::max(len + b, -1.0) : std::min(b, len - 1);
    }
    const double dir = st > 0 ? 1 : st < 0 ? -1 : 0;
    std::vector<Value> items;
    std::string out;
    if (st == 0) {
      // The reference loops forever here (or not at all); an empty result is the sane answer.
      return object.is_array() ? Value::array() : Value::string("");
    }
    for (double i = a; dir * i < dir * b; i += st) {
      const size_t idx = static_cast<size_t>(i);
      if (object.is_array())
        items.push_back(object.arr->items[idx]);
      else
        out += chars[idx];
    }
    return object.is_array() ? Value::array(std::move(items)) : Value::string(std::move(out));
  }

  Value string_method(const Value& s, const std::string& name) {
    const std::string str = s.str;
    auto fn = [](auto f) { return Value::function(f); };
    if (name == "length") return Value::integer(static_cast<double>(text::utf16_length(str)));
    if (name == "upper") return fn([str](std::vector<Value>&, const EnvP&) { return Value::string(text::to_upper(str)); });
    if (name == "lower") return fn([str](std::vector<Value>&, const EnvP&) { return Value::string(text::to_lower(str)); });
    if (name == "strip") return fn([str](std::vector<Value>&, const EnvP&) { return Value::string(text::trim(str)); });
    if (name == "lstrip") return fn([str](std::vector<Value>&, const EnvP&) { return Value::string(text::trim_start(str)); });
    if (name == "rstrip") return fn([str](std::vector<Value>&, const EnvP&) { return Value::string(text::trim_end(str)); });
    if (name == "title") return fn([str](std::vector<Value>&, const EnvP&) { return Value::string(text::title_case(str)); });
    if (name == "capitalize")
      return fn([str](std::vector<Value>&, const EnvP&) { return Value::string(text::capitalize(str)); });
    if (name == "startswith" || name == "endswith") {
      const bool starts = name == "startswith";
      return fn([str, starts, name](std::vector<Value>& args, const EnvP&) {
        if (args.empty()) fail(name + "() requires at least one argument");
        auto test = [&](const std::string& p) {
          return p.size() <= str.size() &&
                 (starts ? str.compare(0, p.size(), p) == 0 : str.compare(str.size() - p.size(), p.size(), p) == 0);
        };
        if (args[0].is_string()) return Value::boolean(test(args[0].str));
        if (args[0].is_array()) {
          for (const Value& item : args[0].arr->items) {
            if (!item.is_string()) fail(name + "() tuple elements must be strings");
            if (test(item.str)) return Value::boolean(true);
          }
          return Value::boolean(false);
        }
        fail(name + "() argument must be a string or tuple of strings");
      });
    }
    if (name == "split") {
      return fn([this, str](std::vector<Value>& args, const EnvP&) {
        Value sep = args.size() > 0 ? args[0] : Value::null();
        if (!sep.is_string() && !sep.is_null()) fail("sep argument must be a string or null");
        Value maxsplit = args.size() > 1 ? args[1] : Value::integer(-1);
        if (maxsplit.kind != Kind::kInt) fail("maxsplit argument must be a number");
        const double max = maxsplit.num;
        // A long string can make millions of pieces in one call: they are bounded like range()'s elements, and
        // counted before they are made.
        const auto too_many = [this] {
          fail("split() would make more than " + std::to_string(lim_.max_range) + " pieces");
        };
        std::vector<Value> parts;
        if (sep.is_null()) {
          const std::string t = text::trim_start(str);
          size_t i = 0;
          while (i < t.size()) {
            while (size_t k = text::space_len(t, i)) i += k;
            if (i >= t.size()) break;
            if (parts.size() >= lim_.max_range) too_many();
            if (max != -1 && parts.size() >= max) {
              parts.push_back(Value::string(t.substr(i)));
              break;
            }
            size_t j = i;
            while (j < t.size() && !text::space_len(t, j)) text::decode(t, j);
            parts.push_back(Value::string(t.substr(i, j - i)));
            i = j;
          }
        } else {
          if (sep.str.empty()) fail("empty separator");
          // The reference splits at every separator, then joins back all but the first `maxsplit` pieces
          // (JavaScript's splice: a negative maxsplit other than -1 keeps all but its last |maxsplit| pieces).
          size_t separators = 0;
          for (size_t j = str.find(sep.str); j != std::string::npos; j = str.find(sep.str, j + sep.str.size()))
            ++separators;
          const double pieces = static_cast<double>(separators) + 1;
          const size_t cuts = max == -1  ? separators
                              : max >= 0 ? static_cast<size_t>(std::min(max, pieces - 1))
                                         : static_cast<size_t>(std::max(0.0, pieces + max));
          if (cuts >= lim_.max_range) too_many();
          parts.reserve(cuts + 1);
          size_t i = 0;
          for (size_t c = 0; c < cuts; ++c) {
            const size_t j = str.find(sep.str, i);
            parts.push_back(Value::string(str.substr(i, j - i)));
            i = j + sep.str.size();
          }
          parts.push_back(Value::string(str.substr(i)));  // the rest, separators and all, after the last cut
        }
        return Value::array(std::move(parts));
      });
    }
    if (name == "replace") {
      return fn([this, str](std::vector<Value>& args, const EnvP&) { return string_replace(str, args); });
    }
    return Value::undefined();
  }

  Value string_replace(const std::string& str, std::vector<Value>& args) {
    if (args.size() < 2) fail("replace() requires at least two arguments");
    if (!args[0].is_string() || !args[1].is_string()) fail("replace() arguments must be strings");
    Value count = Value::null();
    if (args.size() > 2) {
      if (args[2].kind == Kind::kObject && args[2].obj->kind == ObjectKind::kKwargs) {
        const Value* c = args[2].obj->map.find("count");
        count = c ? *c : Value::null();
      } else {
        count = args[2];
      }
    }
    if (count.kind != Kind::kInt && !count.is_null()) fail("replace() count argument must be a number or null");
    const std::string& from = args[0].str;
    const std::string& to = args[1].str;
    if (count.kind == Kind::kInt && count.num == 0) return Value::string(str);
    double remaining = (count.is_null() || count.num < 0) ? INFINITY : count.num;
    std::string out;
    if (from.empty()) {
      // Insert `to` before every code point and at the end.
      size_t i = 0;
      while (true) {
        if (remaining > 0) {
          out += to;
          --remaining;
        }
        check_size(out.size());
        if (i >= str.size()) break;
        const size_t start = i;
        text::decode(str, i);
        out.append(str, start, i - start);
      }
      return Value::string(std::move(out));
    }
    size_t i = 0;
    while (true) {
      const size_t j = remaining > 0 ? str.find(from, i) : std::string::npos;
      if (j == std::string::npos) {
        out.append(str, i, std::string::npos);
        break;
      }
      out.append(str, i, j - i);
      out += to;
      check_size(out.size());
      --remaining;
      i = j + from.size();
    }
    return Value::string(std::move(out));
  }

  Value object_method(const Value& o, const std::string& name) {
    auto obj = o.obj;
    if (name == "get")
      return Value::function([obj](std::vector<Value>& args, const EnvP&) {
        if (args.empty() || !args[0].is_string())
          fail(std::string("Object key must be a string: got ") + (args.empty() ? "UndefinedValue" : args[0].type_name()));
        if (const Value* v = obj->map.find(args[0].str)) return *v;
        return args.size() > 1 ? args[1] : Value::null();
      });
    if (name == "items")
      return Value::function([obj](std::vector<Value>&, const EnvP&) { return items_of(*obj); });
    if (name == "keys")
      return Value::function([obj](std::vector<Value>&, const EnvP&) {
        std::vector<Value> out;
        for (const auto& [k, v] : obj->map.entries()) out.push_back(Value::string(k));
        return Value::array(std::move(out));
      });
    if (name == "values")
      return Value::function([obj](std::vector<Value>&, const EnvP&) {
        std::vector<Value> out;
        for (const auto& [k, v] : obj->map.entries()) out.push_back(v);
        return Value::array(std::move(out));
      });
    if (name == "dictsort")
      return Value::function([obj](std::vector<Value>& args, const EnvP&) { return dictsort(*obj, args); });
    return Value::undefined();
  }

  static Value items_of(const ObjectData& obj) {
    std::vector<Value> out;
    for (const auto& [k, v] : obj.map.entries()) out.push_back(Value::array({Value::string(k), v}));
    return Value::array(std::move(out));
  }

  static Value dictsort(const ObjectData& obj, std::vector<Value>& args) {
    Value kwargs = Value::object();
    std::vector<Value> positional;
    for (const Value& a : args) {
      if (a.kind == Kind::kObject && a.obj->kind == ObjectKind::kKwargs)
        kwargs = a;
      else
        positional.push_back(a);
    }
    auto pick = [&](size_t i, const char* key, Value def) {
      if (i < positional.size()) return positional[i];
      if (const Value* v = kwargs.obj->map.find(key)) return *v;
      return def;
    };
    Value cs = pick(0, "case_sensitive", Value::boolean(false));
    if (cs.kind != Kind::kBool) fail("case_sensitive must be a boolean");
    Value by = pick(1, "by", Value::string("key"));
    if (!by.is_string()) fail("by must be a string");
    if (by.str != "key" && by.str != "value") fail("by must be either 'key' or 'value'");
    Value rev = pick(2, "reverse", Value::boolean(false));
    if (rev.kind != Kind::kBool) fail("reverse must be a boolean");
    Value items = items_of(obj);
    const size_t idx = by.str == "key" ? 0 : 1;
    std::stable_sort(items.arr->items.begin(), items.arr->items.end(), [&](const Value& x, const Value& y) {
      int r = compare_values(x.arr->items[idx], y.arr->items[idx], cs.b);
      return (rev.b ? -r : r) < 0;
    });
    return items;
  }

  Value eval_member(const NodeP& n, const EnvP& env) {
    Value object = eval(n->x, env);
    Value prop;
    if (n->flag) {
      if (n->y->t == NT::kSlice) return eval_slice(object, n->y, env);
      prop = eval(n->y, env);
    } else if (n->y->t == NT::kInt) {
      prop = Value::integer(n->y->num);
    } else {
      prop = Value::string(n->y->s);
    }
    if (object.kind == Kind::kObject) {
      if (!prop.is_string()) fail(std::string("Cannot access property with non-string: got ") + prop.type_name());
      if (const Value* v = object.obj->map.find(prop.str)) return *v;
      if (object.obj->kind == ObjectKind::kNamespace) return Value::undefined();
      return object_method(object, prop.str);
    }
    if (object.is_array() || object.is_string()) {
      if (prop.kind == Kind::kInt) {
        double i = prop.num;
        if (object.is_string()) {
          auto chars = text::code_points(object.str);
          const double len = static_cast<double>(chars.size());
          if (i < 0) i += len;
          if (i < 0 || i >= len) return Value::undefined();
          return Value::string(chars[static_cast<size_t>(i)]);
        }
        const double len = static_cast<double>(object.arr->items.size());
        if (i < 0) i += len;
        if (i < 0 || i >= len) return Value::undefined();
        return object.arr->items[static_cast<size_t>(i)];
      }
      if (prop.is_string()) {
        if (object.is_array())
          return prop.str == "length" ? Value::integer(static_cast<double>(object.arr->items.size())) : Value::undefined();
        return string_method(object, prop.str);
      }
      fail(std::string("Cannot access property with non-string/non-number: got ") + prop.type_name());
    }
    if (!prop.is_string()) fail(std::string("Cannot access property with non-string: got ") + prop.type_name());
    return Value::undefined();
  }

  Value eval_binary(const NodeP& n, const EnvP& env) {
    const std::string& op = n->s;
    Value left = eval(n->x, env);
    if (op == "and") return left.truthy() ? eval(n->y, env) : left;
    if (op == "or") return left.truthy() ? left : eval(n->y, env);
    Value right = eval(n->y, env);
    if (op == "==") return Value::boolean(loose_equal(left, right));
    if (op == "!=") return Value::boolean(!loose_equal(left, right));
    if (left.is_undefined() || right.is_undefined()) {
      if (right.is_undefined() && (op == "in" || op == "not in")) return Value::boolean(op == "not in");
      fail("Cannot perform operation " + op + " on undefined values");
    }
    if (left.is_null() || right.is_null()) fail("Cannot perform operation on null values");
    if (op == "~") {
      std::string s = raw_string(left, lim_.max_output_bytes) + raw_string(right, lim_.max_output_bytes);
      check_size(s.size());
      return Value::string(std::move(s));
    }
    if (op == "**" && numeric_like(left) && numeric_like(right)) {
      const double a = numeric_value(left), b = numeric_value(right);
      if (a == 0 && b < 0) fail("0.0 cannot be raised to a negative power");
      const double r = std::pow(a, b);
      if (!std::isfinite(r)) fail("Exponentiation result is not a finite real number");
      const bool is_float = left.kind == Kind::kFloat || right.kind == Kind::kFloat || b < 0;
      return is_float ? Value::floating(r) : Value::integer(r);
    }
    if (left.is_number() && right.is_number()) {
      const double a = left.num, b = right.num;
      const bool is_float = left.kind == Kind::kFloat || right.kind == Kind::kFloat;
      auto num = [&](double r) { return is_float ? Value::floating(r) : Value::integer(r); };
      if (op == "+") return num(a + b);
      if (op == "-") return num(a - b);
      if (op == "*") return num(a * b);
      if (op == "/") return Value::floating(a / b);
      if (op == "//") return num(std::floor(a / b));
      if (op == "%") return num(std::fmod(a, b));
      if (op == "<") return Value::boolean(a < b);
      if (op == ">") return Value::boolean(a > b);
      if (op == ">=") return Value::boolean(a >= b);
      if (op == "<=") return Value::boolean(a <= b);
    } else if (left.is_array() && right.is_array()) {
      if (op == "+") {
        std::vector<Value> items = left.arr->items;
        items.insert(items.end(), right.arr->items.begin(), right.arr->items.end());
        check_size(items.size());
        return Value::array(std::move(items));
      }
    } else if (right.is_array()) {
      bool member = false;
      for (const Value& x : right.arr->items)
        if (strict_equal(x, left)) {
          member = true;
          break;
        }
      if (op == "in") return Value::boolean(member);
      if (op == "not in") return Value::boolean(!member);
    }
    if ((left.is_string() || right.is_string()) && op == "+") {
      std::string s = raw_string(left, lim_.max_output_bytes) + raw_string(right, lim_.max_output_bytes);
      check_size(s.size());
      return Value::string(std::move(s));
    }
    if (left.is_string() && right.is_string()) {
      if (op == "in") return Value::boolean(right.str.find(left.str) != std::string::npos);
      if (op == "not in") return Value::boolean(right.str.find(left.str) == std::string::npos);
    }
    if (left.is_string() && right.is_mapping()) {
      if (op == "in") return Value::boolean(right.obj->map.find(left.str) != nullptr);
      if (op == "not in") return Value::boolean(right.obj->map.find(left.str) == nullptr);
    }
    fail("Unknown operator \"" + op + "\" between " + left.type_name() + " and " + right.type_name());
  }

  bool run_test(const std::string& name, const Value& v, const Value* arg) {
    if (name == "boolean") return v.kind == Kind::kBool;
    if (name == "callable") return v.is_function();
    if (name == "odd" || name == "even") {
      if (v.kind != Kind::kInt) fail("cannot " + name + " on " + v.type_name());
      const bool odd = std::fmod(v.num, 2) != 0;
      return name == "odd" ? odd : !odd;
    }
    if (name == "false") return v.kind == Kind::kBool && !v.b;
    if (name == "true") return v.kind == Kind::kBool && v.b;
    if (name == "none") return v.is_null();
    if (name == "string") return v.is_string();
    if (name == "number") return v.is_number();
    if (name == "integer") return v.kind == Kind::kInt;
    if (name == "iterable") return (v.is_array() && !v.arr->is_tuple) || v.is_string();
    if (name == "mapping") return v.is_mapping();
    if (name == "sequence") return v.is_array() || v.is_mapping() || v.is_string();
    if (name == "lower") return v.is_string() && v.str == text::to_lower(v.str);
    if (name == "upper") return v.is_string() && v.str == text::to_upper(v.str);
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "equalto" || name == "eq") {
      if (!arg) fail("the test '" + name + "' needs a value to compare with");
      return strict_equal(v, *arg);
    }
    fail("Unknown test: " + name);
  }

  // ------------------------------------------------------------------------------------------------------
  // Filters

  Value apply_filter(const Value& operand, const NodeP& f, const EnvP& env) {
    if (f->t == NT::kIdent) return filter_plain(operand, f->s, env);
    if (f->t != NT::kCall || f->x->t != NT::kIdent) fail("Unknown filter");
    return filter_call(operand, f->x->s, f->a, env);
  }

  Value filter_plain(const Value& v, const std::string& name, const EnvP& env) {
    if (name == "safe") return v;
    if (name == "tojson") return Value::string(to_json(v, {}, 0, true, lim_.max_output_bytes));
    if (v.is_array()) {
      const auto& items = v.arr->items;
      if (name == "list") return v;
      if (name == "first") return items.empty() ? Value::undefined() : items.front();
      if (name == "last") return items.empty() ? Value::undefined() : items.back();
      if (name == "length") return Value::integer(static_cast<double>(items.size()));
      if (name == "reverse") return Value::array(std::vector<Value>(items.rbegin(), items.rend()));
      if (name == "sort") return sort_values(items, false, false, Value::null());
      if (name == "join") return Value::string(join_values(items, ""));
      if (name == "string") return Value::string(to_json(v, {}, 0, false, lim_.max_output_bytes));
      if (name == "unique") return unique(items);
      fail("Unknown ArrayValue filter: " + name);
    }
    if (v.is_string()) {
      if (name == "length" || name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
        Value m = string_method(v, name);
        if (m.is_function()) {
          std::vector<Value> none;
          return (*m.fn)(none, env);
        }
        return m;
      }
      if (name == "trim") return Value::string(text::trim(v.str));
      if (name == "indent") return Value::string(indent(v.str, "    ", false, false));
      if (name == "join" || name == "string") return v;
      if (name == "int") {
        double d;
        return Value::integer(text::parse_int(v.str, d) ? d : 0);
      }
      if (name == "float") {
        double d;
        return Value::floating(text::parse_float(v.str, d) ? d : 0);
      }
      fail("Unknown StringValue filter: " + name);
    }
    if (v.is_number()) {
      if (name == "abs") return v.kind == Kind::kInt ? Value::integer(std::fabs(v.num)) : Value::floating(std::fabs(v.num));
      if (name == "int") return Value::integer(std::floor(v.num));
      if (name == "float") return Value::floating(v.num);
      if (name == "string") return Value::string(to_output(v, lim_.max_output_bytes));
      fail("Unknown NumericValue filter: " + name);
    }
    if (v.is_mapping()) {
      if (name == "items") return items_of(*v.obj);
      if (name == "length") return Value::integer(static_cast<double>(v.obj->map.size()));
      Value m = object_method(v, name);
      if (m.is_function()) {
        std::vector<Value> none;
        return (*m.fn)(none, env);
      }
      fail("Unknown ObjectValue filter: " + name);
    }
    if (v.kind == Kind::kBool) {
      if (name == "bool") return v;
      if (name == "int") return Value::integer(v.b ? 1 : 0);
      if (name == "float") return Value::floating(v.b ? 1 : 0);
      if (name == "string") return Value::string(v.b ? "true" : "false");
      fail("Unknown BooleanValue filter: " + name);
    }
    fail("Cannot apply filter \"" + name + "\" to type: " + v.type_name());
  }

  std::string join_values(const std::vector<Value>& items, const std::string& sep) {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += sep;
      const Value& x = items[i];
      if (!x.is_null() && !x.is_undefined()) out += raw_string(x, lim_.max_output_bytes);
      check_size(out.size());
    }
    return out;
  }

  static Value unique(const std::vector<Value>& items) {
    std::vector<Value> out;
    for (const Value& x : items) {
      bool seen = false;
      for (const Value& y : out)
        if (strict_equal(x, y) || (x.is_number() && y.is_number() && std::isnan(x.num) && std::isnan(y.num))) {
          seen = true;
          break;
        }
      if (!seen) out.push_back(x);
    }
    return Value::array(std::move(out));
  }

  static std::string indent(const std::string& s, const std::string& pad, bool first, bool blank) {
    std::string out;
    size_t start = 0;
    size_t line = 0;
    while (true) {
      const size_t end = s.find('\n', start);
      const std::string piece = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (line > 0) out += "\n";
      if (!((!first && line == 0) || (!blank && piece.empty()))) out += pad;
      out += piece;
      if (end == std::string::npos) break;
      start = end + 1;
      ++line;
    }
    return out;
  }

  static Value attribute_of(const Value& item, const std::string& path) {
    Value v = item;
    size_t start = 0;
    while (true) {
      const size_t dot = path.find('.', start);
      const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (v.kind == Kind::kObject) {
        const Value* f = v.obj->map.find(part);
        v = f ? *f : Value::undefined();
      } else if (v.is_array()) {
        double idx;
        if (text::parse_int(part, idx) && idx >= 0 && idx < v.arr->items.size()) {
          v = v.arr->items[static_cast<size_t>(idx)];
        } else {
          return Value::undefined();
        }
      } else {
        return Value::undefined();
      }
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    return v;
  }

  Value sort_values(const std::vector<Value>& items, bool reverse, bool case_sensitive, const Value& attribute) {
    std::vector<Value> out = items;
    std::string path;
    if (attribute.kind == Kind::kInt) path = text::js_number(attribute.num);
    if (attribute.is_string()) path = attribute.str;
    auto key = [&](const Value& x) { return attribute.is_null() ? x : attribute_of(x, path); };
    std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
      const int r = compare_values(key(a), key(b), case_sensitive);
      return (reverse ? -r : r) < 0;
    });
    return Value::array(std::move(out));
  }

  Value filter_call(const Value& v, const std::string& name, const std::vector<NodeP>& arg_nodes, const EnvP& env) {
    if (name == "tojson") {
      auto [args, kwargs] = eval_args(arg_nodes, env);
      JsonOptions o;
      const Value* indent_v = kwargs.obj->map.find("indent");
      if (indent_v && indent_v->kind != Kind::kInt && !indent_v->is_null()) fail("If set, indent must be a number");
      if (indent_v && indent_v->kind == Kind::kInt) o.indent = static_cast<int>(std::clamp(indent_v->num, -1.0, 64.0));
      if (o.indent < 0) o.indent = 0;
      if (const Value* e = kwargs.obj->map.find("ensure_ascii")) {
        if (e->kind != Kind::kBool) fail("If set, ensure_ascii must be a boolean");
        o.ensure_ascii = e->b;
      }
      if (const Value* s = kwargs.obj->map.find("sort_keys")) {
        if (s->kind != Kind::kBool) fail("If set, sort_keys must be a boolean");
        o.sort_keys = s->b;
      }
      if (const Value* s = kwargs.obj->map.find("separators")) {
        if (s->is_array()) {
          if (s->arr->items.size() != 2 || !s->arr->items[0].is_string() || !s->arr->items[1].is_string())
            fail("separators must be a tuple of two strings");
          o.has_separators = true;
          o.item_sep = s->arr->items[0].str;
          o.key_sep = s->arr->items[1].str;
        } else if (!s->is_null()) {
          fail("If set, separators must be a tuple of two strings");
        }
      }
      return Value::string(to_json(v, o, 0, true, lim_.max_output_bytes));
    }
    if (name == "join") {
      std::vector<Value> items;
      if (v.is_string()) {
        for (auto& c : text::code_points(v.str)) items.push_back(Value::string(c));
      } else if (v.is_array()) {
        items = v.arr->items;
      } else {
        fail("Cannot apply filter \"join\" to type: " + std::string(v.type_name()));
      }
      auto [args, kwargs] = eval_args(arg_nodes, env);
      Value sep = !args.empty() ? args[0] : Value::string("");
      if (args.empty())
        if (const Value* s = kwargs.obj->map.find("separator")) sep = *s;
      if (!sep.is_string()) fail("separator must be a string");
      return Value::string(join_values(items, sep.str));
    }
    if (name == "int" || name == "float") {
      auto [args, kwargs] = eval_args(arg_nodes, env);
      const bool is_int = name == "int";
      Value def = is_int ? Value::integer(0) : Value::floating(0);
      if (!args.empty()) def = args[0];
      else if (const Value* d = kwargs.obj->map.find("default")) def = *d;
      if (v.is_string()) {
        double d;
        const bool ok = is_int ? text::parse_int(v.str, d) : text::parse_float(v.str, d);
        if (!ok) return def;
        return is_int ? Value::integer(d) : Value::floating(d);
      }
      if (v.is_number()) return v;
      if (v.kind == Kind::kBool) return is_int ? Value::integer(v.b ? 1 : 0) : Value::floating(v.b ? 1 : 0);
      fail("Cannot apply filter \"" + name + "\" to type: " + v.type_name());
    }
    if (name == "default") {
      auto [args, kwargs] = eval_args(arg_nodes, env);
      Value def = !args.empty() ? args[0] : Value::string("");
      Value boolean = args.size() > 1 ? args[1] : Value::boolean(false);
      if (args.size() <= 1)
        if (const Value* b = kwargs.obj->map.find("boolean")) boolean = *b;
      if (boolean.kind != Kind::kBool) fail("`default` filter flag must be a boolean");
      if (v.is_undefined() || (boolean.b && !v.truthy())) return def;
      return v;
    }
    if (v.is_array()) {
      if (name == "sort") {
        // Named, not a structured binding: clang 14 cannot capture those in the lambda below.
        auto evaluated = eval_args(arg_nodes, env);
        const std::vector<Value>& args = evaluated.first;
        const Value& kwargs = evaluated.second;
        auto pick = [&](size_t i, const char* key, Value def) {
          if (i < args.size()) return args[i];
          if (const Value* x = kwargs.obj->map.find(key)) return *x;
          return def;
        };
        Value reverse = pick(0, "reverse", Value::boolean(false));
        if (reverse.kind != Kind::kBool) fail("reverse must be a boolean");
        Value cs = pick(1, "case_sensitive", Value::boolean(false));
        if (cs.kind != Kind::kBool) fail("case_sensitive must be a boolean");
        Value attribute = pick(2, "attribute", Value::null());
        if (!attribute.is_string() && attribute.kind != Kind::kInt && !attribute.is_null())
          fail("attribute must be a string, integer, or null");
        return sort_values(v.arr->items, reverse.b, cs.b, attribute);
      }
      if (name == "selectattr" || name == "rejectattr") {
        const bool select = name == "selectattr";
        for (const Value& item : v.arr->items)
          if (item.kind != Kind::kObject) fail("`" + name + "` can only be applied to array of objects");
        for (const auto& a : arg_nodes)
          if (a->t != NT::kStr) fail("arguments of `" + name + "` must be strings", a->pos);
        std::vector<Value> args;
        for (const auto& a : arg_nodes) args.push_back(eval(a, env));
        if (args.empty()) fail("`" + name + "` needs an attribute name");
        std::vector<Value> out;
        for (const Value& item : v.arr->items) {
          const Value* a = item.obj->map.find(args[0].str);
          bool result = false;
          if (a) {
            if (args.size() > 1) {
              if (args.size() < 3 && (args[1].str == "equalto" || args[1].str == "eq"))
                fail("Cannot read properties of undefined (the test " + args[1].str + " needs a value)");
              result = run_test(args[1].str, *a, args.size() > 2 ? &args[2] : nullptr);
            } else {
              result = a->truthy();
            }
          }
          if (result == select) out.push_back(item);
        }
        return Value::array(std::move(out));
      }
      if (name == "map") {
        auto [args, kwargs] = eval_args(arg_nodes, env);
        const Value* attr = kwargs.obj->map.find("attribute");
        if (!attr) fail("`map` expressions without `attribute` set are not currently supported.");
        if (!attr->is_string()) fail("attribute must be a string");
        const Value* def = kwargs.obj->map.find("default");
        std::vector<Value> out;
        for (const Value& item : v.arr->items) {
          if (item.kind != Kind::kObject) fail("items in map must be an object");
          Value x = attribute_of(item, attr->str);
          out.push_back(x.is_undefined() ? (def ? *def : Value::undefined()) : x);
        }
        return Value::array(std::move(out));
      }
      fail("Unknown ArrayValue filter: " + name);
    }
    if (v.is_string()) {
      if (name == "indent") {
        auto evaluated = eval_args(arg_nodes, env);  // not a structured binding (captured below; clang 14)
        const std::vector<Value>& args = evaluated.first;
        const Value& kwargs = evaluated.second;
        auto pick = [&](size_t i, const char* key, Value def) {
          if (i < args.size()) return args[i];
          if (const Value* x = kwargs.obj->map.find(key)) return *x;
          return def;
        };
        Value width = pick(0, "width", Value::integer(4));
        if (width.kind != Kind::kInt) fail("width must be a number");
        const double w = std::clamp(width.num, 0.0, 1024.0);
        return Value::string(indent(v.str, std::string(static_cast<size_t>(w), ' '),
                                    pick(1, "first", Value::boolean(false)).truthy(),
                                    pick(2, "blank", Value::boolean(false)).truthy()));
      }
      if (name == "replace") {
        auto [args, kwargs] = eval_args(arg_nodes, env);
        args.push_back(kwargs);
        return string_replace(v.str, args);
      }
      fail("Unknown StringValue filter: " + name);
    }
    if (v.is_mapping()) {
      Value m = object_method(v, name);
      if (m.is_function()) {
        auto [args, kwargs] = eval_args(arg_nodes, env);
        if (kwargs.obj->map.size() > 0) args.push_back(kwargs);
        return (*m.fn)(args, env);
      }
      fail("Unknown ObjectValue filter: " + name);
    }
    fail("Cannot apply filter \"" + name + "\" to type: " + v.type_name());
  }

  const RenderOptions& opt_;
  const Limits& lim_;
  int depth_ = 0;
  uint64_t iterations_ = 0;
  uint64_t string_bytes_ = 0;
};

std::vector<size_t> line_starts_of(const std::string& s) {
  std::vector<size_t> starts{0};
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == '\n') starts.push_back(i + 1);
  return starts;
}

// " at line L, column C: " (or ": " when the error has no position), to follow "template error".
std::string where(const std::vector<size_t>& starts, size_t pos) {
  if (pos == kNoPos) return ": ";
  const size_t line = std::upper_bound(starts.begin(), starts.end(), pos) - starts.begin();
  const size_t col = pos - starts[line - 1] + 1;
  return " at line " + std::to_string(line) + ", column " + std::to_string(col) + ": ";
}

}  // namespace

Result<Template> Template::parse(const std::string& source, const Limits& limits) {
  if (source.size() > limits.max_template_bytes)
    return invalid_argument("the template is " + std::to_string(source.size()) +
                            " bytes, more than a chat template may have (" + std::to_string(limits.max_template_bytes) +
                            "); is it the right file?");
  auto starts = std::make_shared<std::vector<size_t>>(line_starts_of(source));
  try {
    Source src = preprocess(source);
    Lexer lexer(src);
    std::vector<Token> tokens = lexer.run();
    Parser parser(std::move(tokens), limits, source.size());
    Template t;
    t.root_ = parser.run();
    t.line_starts_ = starts;
    return t;
  } catch (const JinjaError& e) {
    return invalid_argument("template syntax error" + where(*starts, e.pos) + e.message);
  }
}

Result<std::string> Template::render(const std::vector<std::pair<std::string, Value>>& vars,
                                     const RenderOptions& options) const {
  if (!root_) return invalid_argument("render() on an empty Template");
  Interpreter interp(options);
  try {
    EnvP env = interp.make_globals();
    for (const auto& [name, value] : vars) env->set(name, value);
    return interp.run(root_, env);
  } catch (const JinjaError& e) {
    return invalid_argument("template error" + where(*line_starts_, e.pos) + e.message);
  } catch (const BreakSignal&) {
    return invalid_argument("template error: {% break %} outside of a loop");
  } catch (const ContinueSignal&) {
    return invalid_argument("template error: {% continue %} outside of a loop");
  } catch (const std::bad_alloc&) {
    return resource_exhausted("template error: out of memory while rendering");
  }
}

}  // namespace kvshare::jinja

#include "sampling/json_schema.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/json_limits.h"

namespace kvshare {

namespace {

using json = nlohmann::ordered_json;  // properties in the order the schema gives them

// Keywords that say nothing of the text (JSON Schema's annotations and vocabulary markers).
const std::set<std::string, std::less<>> kAnnotations = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
    "writeOnly", "$defs", "definitions", "discriminator"};  // (OpenAPI's discriminator names a property: a hint)
// Keywords that shape the text by the value's type.
const std::set<std::string, std::less<>> kTypeKeywords = {
    "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "minLength",
    "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "format", "pattern"};
// Keywords that make the schema one of several others, or a reference to one.
const std::set<std::string, std::less<>> kCombinators = {"$ref", "anyOf", "oneOf", "allOf", "enum", "const"};

std::string pointer_token(std::string_view name) {
  std::string out;
  for (char c : name) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return out;
}

std::string at(const std::string& where) { return " (at " + (where.empty() ? std::string("the top") : where) + ")"; }

Status refused(const std::string& what, const std::string& where) {
  return invalid_argument("json_schema: " + what + at(where));
}

}  // namespace

class JsonSchema::Compiler {
 public:
  explicit Compiler(const json& doc) : doc_(doc) {}

  // Compiles `s` into node `id` (already added).
  Status compile_into(int32_t id, const json& s, const std::string& where) {
    if (s.is_boolean()) {
      if (!s.get<bool>()) return refused("the schema false accepts no value", where);
      set(id, union_of({any_value()}), where);
      return Status::ok_status();
    }
    if (!s.is_object()) return refused("a schema must be a JSON object or a boolean", where);
    if (!where.empty() && s.contains("$id"))  // (the top's "where" is empty)
      return refused("$id below the top of the schema is not supported: it changes what the $refs inside it point "
                     "to", where);
    std::string combinator;
    for (const auto& [key, value] : s.items()) {
      if (kAnnotations.count(key) != 0 || kTypeKeywords.count(key) != 0) continue;
      if (kCombinators.count(key) == 0)
        return refused("the keyword \"" + key + "\" is not supported; docs/limits.md lists what is", where);
      const bool enum_and_const = (combinator == "enum" && key == "const") || (combinator == "const" && key == "enum");
      if (!combinator.empty() && !enum_and_const)  // (Pydantic writes a Literal's value as both)
        return refused("\"" + combinator + "\" and \"" + key + "\" together are not supported", where);
      if (combinator.empty() || key == "const") combinator = key;
    }
    if (!combinator.empty()) {
      for (const auto& [key, value] : s.items()) {
        const bool typed_enum = key == "type" && (combinator == "enum" || combinator == "const");
        if (kTypeKeywords.count(key) != 0 && !typed_enum)
          return refused("\"" + key + "\" beside \"" + combinator + "\" is not supported", where);
      }
    }
    if (combinator == "$ref") return compile_ref(id, s["$ref"], where);
    if (combinator == "anyOf" || combinator == "oneOf" || combinator == "allOf") {
      const json& list = s[combinator];
      const std::string here = where + "/" + combinator;
      if (!list.is_array() || list.empty()) return refused(combinator + " must be a non-empty array", here);
      if (combinator == "allOf" && list.size() != 1)
        return refused("allOf of more than one schema is not supported", here);
      // oneOf's alternatives must be told apart (checked at the end)
      Node u = union_of({});
      u.one_of = combinator == "oneOf";
      for (size_t i = 0; i < list.size(); ++i) {
        KV_ASSIGN_OR_RETURN(int32_t alt, compile_new(list[i], here + "/" + std::to_string(i)));
        u.alternatives.push_back(alt);
      }
      set(id, std::move(u), where);
      return Status::ok_status();
    }
    std::vector<std::string> types;
    KV_RETURN_IF_ERROR(read_types(s, where, types));
    if (combinator == "enum" || combinator == "const") return compile_literal(id, s, combinator, types, where);
    Node u = union_of({});
    for (const std::string& type : types) {
      Node n;
      KV_RETURN_IF_ERROR(compile_type(type, s, where, n));
      if (types.size() == 1) {
        set(id, std::move(n), where);
        return Status::ok_status();
      }
      u.alternatives.push_back(add(std::move(n), where));
    }
    set(id, std::move(u), where);
    return Status::ok_status();
  }

  Result<int32_t> compile_new(const json& s, const std::string& where) {
    const int32_t id = add(Node(), where);
    KV_RETURN_IF_ERROR(compile_into(id, s, where));
    return id;
  }

  // The bytes each node begins with, unions checked to be told apart by their first byte, and the top level checked
  // to have a last byte.
  Status finish() {
    state_.assign(out.nodes_.size(), 0);
    for (size_t id = 0; id < out.nodes_.size(); ++id) KV_RETURN_IF_ERROR(first_bytes(static_cast<int32_t>(id)));
    const std::bitset<256>& top = out.nodes_[0].first;
    bool number = top.test('-');
    for (char c = '0'; c <= '9'; ++c) number = number || top.test(static_cast<uint8_t>(c));
    if (number)
      return refused("the output may not be a number alone: a number has no last character that ends it; put it "
                     "in an object", "");
    KV_RETURN_IF_ERROR(min_depths());
    for (const Node& n : out.nodes_) {
      for (const Property& p : n.properties)
        for (char c : p.key) out.spelled_.set(static_cast<uint8_t>(c));
      for (const std::string& t : n.texts)
        for (char c : t) out.spelled_.set(static_cast<uint8_t>(c));
      if (n.range.has_value())  // (a range may leave one digit the only way on: [7, 7] takes "7" alone)
        for (char c : std::string_view("0123456789-.")) out.spelled_.set(static_cast<uint8_t>(c));
      for (char c : format_characters(n.format)) out.spelled_.set(static_cast<uint8_t>(c));
      if (n.pattern) out.spelled_ |= n.pattern->forced();
    }
    return Status::ok_status();
  }

  JsonSchema out;

 private:
  int32_t add(Node n, const std::string& where) {
    out.nodes_.push_back(std::move(n));
    where_.push_back(where);
    return static_cast<int32_t>(out.nodes_.size() - 1);
  }
  void set(int32_t id, Node n, const std::string& where) {
    out.nodes_[static_cast<size_t>(id)] = std::move(n);
    where_[static_cast<size_t>(id)] = where;
  }
  static Node union_of(std::vector<int32_t> alternatives) {
    Node n;
    n.kind = Kind::kUnion;
    n.alternatives = std::move(alternatives);
    return n;
  }

  // Any JSON value: an object with keys of any text and values of any kind, an array of any values, a string, a
  // number, true, false or null. One node, made when first needed.
  int32_t any_value() {
    if (any_ >= 0) return any_;
    any_ = add(union_of({}), "");
    Node object, array, string, number, literal;
    object.kind = Kind::kObject;
    object.other_values = any_;
    array.kind = Kind::kArray;
    array.items = any_;
    string.kind = Kind::kString;
    number.kind = Kind::kNumber;
    literal.kind = Kind::kLiteral;
    literal.texts = {"false", "null", "true"};
    Node u = union_of({});
    for (Node* n : {&object, &array, &string, &number, &literal}) u.alternatives.push_back(add(std::move(*n), ""));
    set(any_, std::move(u), "");
    return any_;
  }

  Status read_types(const json& s, const std::string& where, std::vector<std::string>& types) {
    static const std::vector<std::string> kAll = {"object", "array", "string", "number", "boolean", "null"};
    auto it = s.find("type");
    if (it == s.end()) {
      types = kAll;
      return Status::ok_status();
    }
    const json list = it->is_array() ? *it : json::array({*it});
    for (const json& t : list) {
      const bool known = t.is_string() && (std::find(kAll.begin(), kAll.end(), t.get<std::string>()) != kAll.end() ||
                                           t.get<std::string>() == "integer");
      if (!known)
        return refused("type must be object, array, string, number, integer, boolean or null, or a list of them",
                       where + "/type");
      if (std::find(types.begin(), types.end(), t.get<std::string>()) != types.end())
        return refused("type lists " + t.dump() + " twice", where + "/type");
      types.push_back(t.get<std::string>());
    }
    if (types.empty()) return refused("type is an empty list: no value has none of the types", where + "/type");
    // number takes in every integer: with both, integer says nothing more
    auto number = std::find(types.begin(), types.end(), "number");
    auto integer = std::find(types.begin(), types.end(), "integer");
    if (number != types.end() && integer != types.end()) types.erase(integer);
    return Status::ok_status();
  }

  static Result<uint32_t> count(const json& s, const char* key, uint32_t absent, const std::string& where) {
    auto it = s.find(key);
    if (it == s.end()) return absent;
    const bool whole_float = it->is_number_float() && it->get<double>() >= 0 && std::isfinite(it->get<double>()) &&
                             std::trunc(it->get<double>()) == it->get<double>();  // 2.0 counts as 2
    if (!it->is_number_unsigned() && !whole_float)
      return refused(std::string(key) + " must be a non-negative integer", where);
    const double value = whole_float ? it->get<double>() : static_cast<double>(it->get<uint64_t>());
    return static_cast<uint32_t>(std::min<double>(value, UINT32_MAX - 1));
  }

  Status compile_type(const std::string& type, const json& s, const std::string& where, Node& n) {
    if (type == "object") return compile_object(s, where, n);
    if (type == "array") {
      n.kind = Kind::kArray;
      auto items = s.find("items");
      if (items == s.end()) {
        n.items = any_value();
      } else {
        if (items->is_array()) return refused("items as a list (tuple validation) is not supported", where + "/items");
        KV_ASSIGN_OR_RETURN(n.items, compile_new(*items, where + "/items"));
      }
      KV_ASSIGN_OR_RETURN(n.min_items, count(s, "minItems", 0, where + "/minItems"));
      KV_ASSIGN_OR_RETURN(n.max_items, count(s, "maxItems", UINT32_MAX, where + "/maxItems"));
      if (n.min_items > n.max_items) return refused("minItems is more than maxItems: no array follows it", where);
      return Status::ok_status();
    }
    if (type == "string") {
      n.kind = Kind::kString;
      KV_ASSIGN_OR_RETURN(n.min_length, count(s, "minLength", 0, where + "/minLength"));
      KV_ASSIGN_OR_RETURN(n.max_length, count(s, "maxLength", UINT32_MAX, where + "/maxLength"));
      if (n.min_length > n.max_length) return refused("minLength is more than maxLength: no string follows it", where);
      KV_RETURN_IF_ERROR(compile_format(s, where, n));
      return compile_pattern(s, where, n);
    }
    if (type == "number" || type == "integer") {
      n.kind = Kind::kNumber;
      n.integer = type == "integer";
      return compile_range(s, where, n);
    }
    n.kind = Kind::kLiteral;
    n.texts = type == "boolean" ? std::vector<std::string>{"false", "true"} : std::vector<std::string>{"null"};
    return Status::ok_status();
  }

  // A string's format: one held to (json_format.h), with lengths that leave every text of it (a time is 9 to 21
  // characters, a date-time 20 to 32), or refused.
  Status compile_format(const json& s, const std::string& where, Node& n) {
    auto it = s.find("format");
    if (it == s.end()) return Status::ok_status();
    if (!it->is_string()) return refused("format must be a string", where + "/format");
    if (*it == "email") {  // held to as a pattern (email_pattern)
      if (n.min_length > 0 || n.max_length != UINT32_MAX || s.contains("pattern"))
        return refused("minLength, maxLength or pattern beside the format \"email\" is not supported; leave them out",
                       where);
      n.pattern = email_pattern();
      return Status::ok_status();
    }
    const std::optional<StringFormat> format = string_format(it->get<std::string>());
    if (!format.has_value())
      return refused("the format " + it->dump() + " is not supported; date, time, date-time, uuid and email are",
                     where + "/format");
    const auto [shortest, longest] = *format == StringFormat::kDate   ? std::pair{10u, 10u}
                                     : *format == StringFormat::kTime ? std::pair{9u, 21u}
                                     : *format == StringFormat::kUuid ? std::pair{36u, 36u}
                                                                      : std::pair{20u, 32u};
    if (n.min_length > shortest || n.max_length < longest)
      return refused("minLength or maxLength beside the format " + it->dump() + " would leave out some of its "
                     "texts (" + std::to_string(shortest) + " to " + std::to_string(longest) + " characters); leave "
                     "them out", where);
    n.format = *format;
    return Status::ok_status();
  }

  // A string's pattern (json_pattern.h); alone: lengths or a format beside it are refused. At most
  // kMaxPatternStates states in all the schema's patterns.
  Status compile_pattern(const json& s, const std::string& where, Node& n) {
    auto it = s.find("pattern");
    if (it == s.end()) return Status::ok_status();
    if (!it->is_string()) return refused("pattern must be a string", where + "/pattern");
    if (n.format != StringFormat::kNone || n.min_length > 0 || n.max_length != UINT32_MAX)
      return refused("pattern beside format, minLength or maxLength is not supported (put the lengths in the "
                     "pattern: ^.{2,8}$)", where);
    auto pattern = Pattern::compile(it->get<std::string>());
    if (!pattern.ok()) return refused(pattern.status().message(), where + "/pattern");
    pattern_states_ += (*pattern)->size();
    if (pattern_states_ > kMaxPatternStates)
      return refused("the schema's patterns need more than " + std::to_string(kMaxPatternStates) + " states in all; "
                     "simplify them", where + "/pattern");
    n.pattern = *pattern;
    return Status::ok_status();
  }

  // minimum, maximum, and their exclusive forms: a number (drafts 6 on), or a boolean that makes minimum or maximum
  // exclusive (draft 4). Each bound is read as the double a reader compares with; an exclusive one is the next double
  // inward (NumberRange).
  Status compile_range(const json& s, const std::string& where, Node& n) {
    struct Bound {
      const char* key;
      bool lower, exclusive;
    };
    std::optional<double> lo, hi;
    for (const Bound& k : {Bound{"minimum", true, false}, Bound{"maximum", false, false},
                           Bound{"exclusiveMinimum", true, true}, Bound{"exclusiveMaximum", false, true}}) {
      auto it = s.find(k.key);
      if (it == s.end()) continue;
      const std::string here = where + "/" + k.key;
      const std::string plain = k.lower ? "minimum" : "maximum";
      if (k.exclusive && it->is_boolean()) {  // draft 4's: it makes the plain bound exclusive (read with that)
        if (it->get<bool>() && !s.contains(plain))
          return refused(std::string(k.key) + ": true needs " + plain + " beside it", here);
        continue;
      }
      if (!it->is_number() || !std::isfinite(it->get<double>()))
        return refused(std::string(k.key) + " must be a number", here);
      constexpr int64_t kExact = int64_t{1} << 53;  // every integer up to it is a double
      const bool exact = it->is_number_unsigned()  ? it->get<uint64_t>() <= uint64_t{kExact}
                         : it->is_number_integer() ? it->get<int64_t>() >= -kExact && it->get<int64_t>() <= kExact
                                                   : std::fabs(it->get<double>()) <= static_cast<double>(kExact);
      if (!exact)
        return refused(std::string(k.key) + " is " + it->dump() + ", past 2^53: too large to compare exactly", here);
      bool exclusive = k.exclusive;
      if (!exclusive) {
        auto e = s.find(k.lower ? "exclusiveMinimum" : "exclusiveMaximum");
        exclusive = e != s.end() && e->is_boolean() && e->get<bool>();
      }
      double bound = it->get<double>();
      if (exclusive) bound = std::nextafter(bound, k.lower ? INFINITY : -INFINITY);
      std::optional<double>& b = k.lower ? lo : hi;
      b = !b.has_value() ? bound : k.lower ? std::max(*b, bound) : std::min(*b, bound);
    }
    if (!lo.has_value() && !hi.has_value()) return Status::ok_status();
    auto range = NumberRange::make(lo, hi, n.integer);
    if (!range.ok()) return refused(range.status().message() + ": no value follows it", where);
    n.range = *range;
    return Status::ok_status();
  }

  Status compile_object(const json& s, const std::string& where, Node& n) {
    n.kind = Kind::kObject;
    auto properties = s.find("properties");
    if (properties != s.end()) {
      if (!properties->is_object()) return refused("properties must be an object", where + "/properties");
      for (const auto& [name, sub] : properties->items()) {
        Property p;
        p.key = json(name).dump(-1, ' ', false, json::error_handler_t::strict);
        KV_ASSIGN_OR_RETURN(p.value, compile_new(sub, where + "/properties/" + pointer_token(name)));
        n.properties.push_back(std::move(p));
      }
    }
    auto required = s.find("required");
    if (required != s.end()) {
      if (!required->is_array()) return refused("required must be an array of names", where + "/required");
      for (const json& name : *required) {
        auto p = std::find_if(n.properties.begin(), n.properties.end(), [&](const Property& q) {
          return name.is_string() && q.key == name.dump(-1, ' ', false, json::error_handler_t::strict);
        });
        if (p == n.properties.end())
          return refused("required names " + name.dump() + ", which properties does not define (other keys are "
                         "not supported beside properties)", where + "/required");
        p->required = true;
      }
    }
    auto other = s.find("additionalProperties");
    if (other == s.end()) {
      n.other_values = n.properties.empty() ? any_value() : -1;
    } else if (other->is_boolean() && !other->get<bool>()) {
      n.other_values = -1;
    } else if (!n.properties.empty()) {
      return refused("additionalProperties other than false beside properties is not supported (leave it out or "
                     "set it to false: no other keys)", where + "/additionalProperties");
    } else {
      KV_ASSIGN_OR_RETURN(n.other_values, compile_new(*other, where + "/additionalProperties"));
    }
    return Status::ok_status();
  }

  Status compile_literal(int32_t id, const json& s, const std::string& combinator,
                         const std::vector<std::string>& types, const std::string& where) {
    const json& values = combinator == "const" ? json::array({s["const"]}) : s["enum"];
    if (s.contains("enum") && (!s["enum"].is_array() || s["enum"].empty()))
      return refused("enum must be a non-empty array", where + "/enum");
    if (combinator == "const" && s.contains("enum") &&
        std::find(s["enum"].begin(), s["enum"].end(), s["const"]) == s["enum"].end())
      return refused("const is not one of enum's values: no value follows both", where);
    Node n;
    n.kind = Kind::kLiteral;
    for (const json& v : values) {
      const std::string type = v.is_object() ? "object" : v.is_array() ? "array" : v.is_string() ? "string"
                               : v.is_boolean() ? "boolean" : v.is_null() ? "null" : "number";
      const bool whole = v.is_number_integer() || v.is_number_unsigned() ||
                         (v.is_number_float() && std::isfinite(v.get<double>()) &&
                          std::trunc(v.get<double>()) == v.get<double>());  // 2.0 is an integer
      auto listed = [&](const std::string& t) { return std::find(types.begin(), types.end(), t) != types.end(); };
      if (!listed(type) && !(type == "number" && whole && listed("integer")))
        return refused(combinator + " holds " + v.dump() + ", which type does not allow", where);
      KV_ASSIGN_OR_RETURN(json written, exact_value(v, where));
      n.texts.push_back(written.dump(-1, ' ', false, json::error_handler_t::strict));
    }
    std::sort(n.texts.begin(), n.texts.end());
    n.texts.erase(std::unique(n.texts.begin(), n.texts.end()), n.texts.end());
    set(id, std::move(n), where);
    return Status::ok_status();
  }

  // `v` as it is written out, with the same value to any reader: a whole number held as a double (2.0) is written
  // as an integer (2), which every draft of JSON Schema counts as an integer. Refused: -0, which equals 0 (so that
  // oneOf's alternatives 0 and -0.0, told apart by their first byte, cannot both match), and a whole number past
  // 2^53 held as a double, which may be an integer too long for 64 bits that the parser rounded.
  static Result<json> exact_value(const json& v, const std::string& where) {
    if (v.is_structured()) {
      json out = v.is_object() ? json::object() : json::array();
      for (auto it = v.begin(); it != v.end(); ++it) {
        KV_ASSIGN_OR_RETURN(json item, exact_value(*it, where));
        if (v.is_object()) out[it.key()] = std::move(item);
        else out.push_back(std::move(item));
      }
      return out;
    }
    if (!v.is_number_float()) return v;
    const double d = v.get<double>();
    if (d == 0 && std::signbit(d))
      return refused("enum or const holds -0, which equals 0: write 0", where);
    if (std::trunc(d) != d) return v;
    if (std::fabs(d) >= 9007199254740992.0)  // 2^53
      return refused("enum or const holds " + v.dump() + ", a whole number too large to write back exactly", where);
    return json(static_cast<int64_t>(d));
  }

  // "#" (the whole schema) or a JSON pointer into it ("#/$defs/Name"); each target is compiled once, so that a
  // schema may refer to itself (a tree).
  Status compile_ref(int32_t id, const json& ref, const std::string& where) {
    if (!ref.is_string() || ref.get<std::string>().empty() || ref.get<std::string>()[0] != '#')
      return refused("$ref must point into this schema (\"#\" or \"#/$defs/Name\"); other documents are not "
                     "read", where + "/$ref");
    // A URI fragment: %XX decoded first (a JSON pointer's own escapes, ~0 and ~1, after)
    const std::string fragment = ref.get<std::string>().substr(1);
    std::string pointer;
    for (size_t i = 0; i < fragment.size(); ++i) {
      if (fragment[i] != '%') {
        pointer += fragment[i];
        continue;
      }
      auto hex = [&](size_t k) { return k < fragment.size() ? std::string("0123456789abcdef").find(
                                                                 static_cast<char>(std::tolower(fragment[k])))
                                                           : std::string::npos; };
      if (hex(i + 1) == std::string::npos || hex(i + 2) == std::string::npos)
        return refused("$ref " + ref.dump() + " has a % that is not followed by two hex digits", where + "/$ref");
      pointer += static_cast<char>(hex(i + 1) * 16 + hex(i + 2));
      i += 2;
    }
    auto known = refs_.find(pointer);
    if (known == refs_.end()) {
      const json* target = &doc_;
      for (size_t i = 0; i < pointer.size();) {
        if (pointer[i] != '/') return refused("$ref " + ref.dump() + " is not a JSON pointer", where + "/$ref");
        size_t end = pointer.find('/', i + 1);
        if (end == std::string::npos) end = pointer.size();
        std::string token;
        for (size_t k = i + 1; k < end; ++k) {
          if (pointer[k] == '~' && k + 1 < end && (pointer[k + 1] == '0' || pointer[k + 1] == '1')) {
            token += pointer[++k] == '0' ? '~' : '/';
          } else {
            token += pointer[k];
          }
        }
        const json* next = nullptr;
        if (target->is_object() && target->contains(token)) {
          next = &(*target)[token];
        } else if (target->is_array() && !token.empty() && token.size() < 10 &&
                   token.find_first_not_of("0123456789") == std::string::npos && (token == "0" || token[0] != '0') &&
                   std::stoul(token) < target->size()) {
          next = &(*target)[std::stoul(token)];
        }
        if (next == nullptr)
          return refused("$ref " + ref.dump() + " points to nothing in this schema", where + "/$ref");
        target = next;
        i = end;
      }
      const int32_t target_id = pointer.empty() ? 0 : add(Node(), pointer);
      known = refs_.emplace(pointer, target_id).first;
      if (!pointer.empty()) KV_RETURN_IF_ERROR(compile_into(target_id, *target, pointer));
    }
    set(id, union_of({known->second}), where);
    return Status::ok_status();
  }

  // Each node's min_depth, from "unbounded" down until nothing changes. A node left unbounded has no finite value (an
  // array of at least one of itself): refused, as a value too deep for the recognizer is.
  Status min_depths() {
    constexpr uint32_t kUnbounded = UINT32_MAX;
    for (Node& n : out.nodes_) n.min_depth = kUnbounded;
    auto depth = [&](int32_t id) { return out.nodes_[static_cast<size_t>(id)].min_depth; };
    auto nested = [](uint32_t d) { return d == kUnbounded ? kUnbounded : d + 1; };
    for (bool changed = true; changed;) {
      changed = false;
      for (Node& n : out.nodes_) {
        uint32_t d = 0;
        switch (n.kind) {
          case Kind::kObject:
            for (const Property& p : n.properties)
              if (p.required) d = std::max(d, depth(p.value));
            d = nested(d);
            break;
          case Kind::kArray:
            d = n.min_items == 0 ? 1 : nested(depth(n.items));
            break;
          case Kind::kUnion:
            d = kUnbounded;
            for (int32_t alt : n.alternatives) d = std::min(d, depth(alt));
            break;
          default:
            break;
        }
        if (d < n.min_depth) {
          n.min_depth = d;
          changed = true;
        }
      }
    }
    for (size_t id = 0; id < out.nodes_.size(); ++id) {
      if (out.nodes_[id].min_depth == kUnbounded)
        return refused("no value can follow this: it requires a value of itself inside it, without end", where_[id]);
    }
    if (out.nodes_[0].min_depth > kMaxNesting)
      return refused("no value of it nests fewer than " + std::to_string(out.nodes_[0].min_depth) +
                     " objects and arrays; at most " + std::to_string(kMaxNesting) + " are written", "");
    return Status::ok_status();
  }

  Status first_bytes(int32_t id) {
    Node& n = out.nodes_[static_cast<size_t>(id)];
    if (state_[static_cast<size_t>(id)] == 2) return Status::ok_status();
    if (state_[static_cast<size_t>(id)] == 1)
      return refused("the schema refers to itself with no object or array in between: no value can follow it",
                     where_[static_cast<size_t>(id)]);
    state_[static_cast<size_t>(id)] = 1;
    switch (n.kind) {
      case Kind::kObject: n.first.set('{'); break;
      case Kind::kArray: n.first.set('['); break;
      case Kind::kString: n.first.set('"'); break;
      case Kind::kNumber:
        n.first.set('-');
        for (char c = '0'; c <= '9'; ++c) n.first.set(static_cast<uint8_t>(c));
        break;
      case Kind::kLiteral:
        for (const std::string& t : n.texts) n.first.set(static_cast<uint8_t>(t[0]));
        break;
      case Kind::kUnion: {
        std::bitset<256> seen;
        for (int32_t alt : n.alternatives) {
          KV_RETURN_IF_ERROR(first_bytes(alt));
          seen |= out.nodes_[static_cast<size_t>(alt)].first;
        }
        out.nodes_[static_cast<size_t>(id)].first = seen;
        if (n.one_of) KV_RETURN_IF_ERROR(told_apart(id));
        break;
      }
    }
    state_[static_cast<size_t>(id)] = 2;
    return Status::ok_status();
  }

  // oneOf accepts a value that follows exactly one of its alternatives, so no value may follow two: each two begin
  // with different characters, or are objects that require a property whose const or enum values differ (a
  // discriminator, as Pydantic writes a union of models).
  Status told_apart(int32_t id) const {
    const Node& n = out.nodes_[static_cast<size_t>(id)];
    for (size_t i = 0; i < n.alternatives.size(); ++i) {
      for (size_t j = i + 1; j < n.alternatives.size(); ++j) {
        const Node& a = resolved(n.alternatives[i]);
        const Node& b = resolved(n.alternatives[j]);
        const std::bitset<256> both = a.first & b.first;
        if (both.none() || discriminated(a, b)) continue;
        int c = 0;
        while (!both.test(static_cast<size_t>(c))) ++c;
        return refused("oneOf's alternatives " + std::to_string(i) + " and " + std::to_string(j) + " can both begin "
                       "with '" + std::string(1, static_cast<char>(c)) + "', and no required property with different "
                       "const or enum values tells them apart: a value might follow both, which oneOf refuses. Use "
                       "anyOf, or give each object such a property", where_[static_cast<size_t>(id)]);
      }
    }
    return Status::ok_status();
  }
  // A $ref (a union of one) as what it points to.
  const Node& resolved(int32_t id) const {
    const Node* n = &out.nodes_[static_cast<size_t>(id)];
    for (size_t hops = 0; n->kind == Kind::kUnion && n->alternatives.size() == 1 && hops < out.nodes_.size(); ++hops)
      n = &out.nodes_[static_cast<size_t>(n->alternatives[0])];
    return *n;
  }
  bool discriminated(const Node& a, const Node& b) const {
    if (a.kind != Kind::kObject || b.kind != Kind::kObject) return false;
    for (const Property& p : a.properties) {
      for (const Property& q : b.properties) {
        if (!p.required || !q.required || p.key != q.key) continue;
        const Node& x = resolved(p.value);
        const Node& y = resolved(q.value);
        if (x.kind != Kind::kLiteral || y.kind != Kind::kLiteral) continue;
        const std::set<std::string> xs = values_of(x), ys = values_of(y);
        std::vector<std::string> common;
        std::set_intersection(xs.begin(), xs.end(), ys.begin(), ys.end(), std::back_inserter(common));
        if (common.empty()) return true;
      }
    }
    return false;
  }
  // A literal's values as texts that are equal where the values are: objects' keys sorted ({"a":1,"b":2} and
  // {"b":2,"a":1} are one value, written in their schema's order).
  static std::set<std::string> values_of(const Node& literal) {
    std::set<std::string> out;
    for (const std::string& t : literal.texts) out.insert(nlohmann::json::parse(t).dump());
    return out;
  }

  static constexpr size_t kMaxPatternStates = 4 * Pattern::kMaxStates;
  size_t pattern_states_ = 0;
  const json& doc_;
  int32_t any_ = -1;
  std::map<std::string, int32_t> refs_;
  std::vector<std::string> where_;  // each node's place in the schema, for errors
  std::vector<uint8_t> state_;      // first_bytes: 0 not seen, 1 being computed, 2 done
};

Result<std::shared_ptr<const JsonSchema>> JsonSchema::compile(std::string_view text) {
  if (text.size() > kMaxBytes)
    return invalid_argument("json_schema is " + std::to_string(text.size()) + " bytes, more than the limit of " +
                            std::to_string(kMaxBytes));
  KV_RETURN_IF_ERROR(check_json_limits(text, "json_schema"));
  const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return invalid_argument("json_schema is not valid JSON");
  Compiler c(doc);
  KV_RETURN_IF_ERROR(c.compile_new(doc, "").status());  // node 0, the root
  KV_RETURN_IF_ERROR(c.finish());
  return std::make_shared<const JsonSchema>(std::move(c.out));
}

std::optional<std::string> JsonSchema::text_of(const nlohmann::ordered_json& given) {
  if (given.is_string()) return given.get<std::string>();
  if (given.is_object() || given.is_boolean()) return given.dump();
  return std::nullopt;
}

std::shared_ptr<const JsonSchema> JsonSchema::any_object() {
  static const std::shared_ptr<const JsonSchema> schema = *compile(R"({"type": "object"})");
  return schema;
}

}  // namespace kvshare

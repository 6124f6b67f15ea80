// A Jinja template engine for chat templates, written to render exactly as Hugging Face's JavaScript
// implementation (@huggingface/jinja, the one transformers.js uses) does, quirks included: trim_blocks and
// lstrip_blocks on, a single trailing newline dropped, JavaScript number formatting and `==`, `tojson` that
// keeps key order and prints 1.0 as 1, undefined values that render as "" but fail in `+`/`~`, and so on.
//
//   auto tpl = jinja::Template::parse(source);          // syntax errors: Status with line and column
//   jinja::Value ctx = jinja::Value::from_json(json);   // nlohmann ordered_json (key order is kept)
//   auto text = tpl->render(vars);                      // runtime errors and raise_exception: Status too
//
// Rendering never crashes on a hostile template: nesting depth, loop iterations, range() sizes and output size
// are bounded and exceeding them is an error that says which limit was hit.
#pragma once

#include <atomic>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/status.h"

namespace kvshare::jinja {

struct Env;
struct Value;

// Keyword arguments travel as the last positional argument, an Object of kind kKwargs (as the reference does).
using NativeFn = std::function<Value(std::vector<Value>& args, const std::shared_ptr<Env>& caller_env)>;

enum class Kind { kUndefined, kNull, kBool, kInt, kFloat, kString, kArray, kObject, kFunction };
enum class ObjectKind { kObject, kKwargs, kNamespace };

struct ArrayData;
struct ObjectData;

struct Value {
  Kind kind = Kind::kUndefined;
  bool b = false;
  double num = 0;  // kInt and kFloat (JavaScript numbers are doubles; the kind keeps int vs float)
  std::string str;
  std::shared_ptr<ArrayData> arr;
  std::shared_ptr<ObjectData> obj;
  std::shared_ptr<NativeFn> fn;

  static Value undefined() { return {}; }
  static Value null();
  static Value boolean(bool v);
  static Value integer(double v);
  static Value floating(double v);
  static Value string(std::string s);
  static Value array(std::vector<Value> items = {}, bool tuple = false);
  static Value object(ObjectKind kind = ObjectKind::kObject);
  static Value function(NativeFn f);
  // JSON to a value as JSON.parse + the reference's conversion do: integral numbers become integers, object
  // keys keep their order (integer-like keys first, ascending, as JavaScript objects order them).
  static Value from_json(const nlohmann::ordered_json& j);

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_null() const { return kind == Kind::kNull; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat; }
  bool is_array() const { return kind == Kind::kArray; }
  bool is_object() const { return kind == Kind::kObject; }  // any ObjectKind
  bool is_mapping() const;    // an object, not a namespace
  bool is_namespace() const;
  bool is_function() const { return kind == Kind::kFunction; }
  bool truthy() const;
  // The name of the kind as the reference's error messages say it ("StringValue").
  const char* type_name() const;
};

// An insertion-ordered string map (JavaScript's Map).
class OrderedMap {
 public:
  const Value* find(const std::string& key) const;
  Value* find(const std::string& key);
  void set(const std::string& key, Value v);
  size_t size() const { return entries_.size(); }
  const std::vector<std::pair<std::string, Value>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<std::string, Value>> entries_;
  std::unordered_map<std::string, size_t> index_;
};

struct ArrayData {
  std::vector<Value> items;  // never changed after Value::array builds it
  bool is_tuple = false;
  // What copying the list's items, or printing it, moves: a Value per item and the bytes of the strings among
  // `items`, and through nested lists below them (not inside objects). Counted once, when the list is built. The
  // items count too, so that a list of millions of empty strings ("...".split(' ')) is not free to copy.
  uint64_t bytes = 0;
};

struct ObjectData {
  OrderedMap map;
  ObjectKind kind = ObjectKind::kObject;
  // The JSON text the object was read from, where the caller keeps it (ChatTemplate::apply's tool-call arguments):
  // made a string ({{ }}, "+", "~", join), the object is that text; "" for others ("[object Map]", as the reference).
  std::string text;
};

inline bool Value::is_mapping() const { return kind == Kind::kObject && obj->kind != ObjectKind::kNamespace; }
inline bool Value::is_namespace() const { return kind == Kind::kObject && obj->kind == ObjectKind::kNamespace; }

// Limits that keep a hostile template from exhausting the stack, memory or time.
struct Limits {
  // The template's source. Real templates are under 20 KB (the largest of llama.cpp's 68 is 16.7 KB); parsing
  // costs about 0.2 s per megabyte, so a file mistaken for a template is refused at once.
  size_t max_template_bytes = 1u << 20;
  int max_depth = 400;                        // nested statements/expressions/macro calls
  size_t max_output_bytes = 64u << 20;        // any string built while rendering
  // Loop iterations and macro calls over the whole render. A real template loops over the messages a few
  // times; at about a microsecond each, a runaway one fails in about a second (10^7 took 11-24 s: a chat request
  // waited that long).
  uint64_t max_loop_iterations = 1'000'000;
  size_t max_range = 1'000'000;               // elements of one range(), pieces of one split()
  // Bytes of strings and lists made or copied over the whole render: every expression's value (a string's bytes,
  // a list's ArrayData::bytes) and loop items. The limits above bound the count of steps and each string's size,
  // but a loop that reads a 64 MiB string (or splits a long one into a million pieces) at each of 10^6 iterations
  // stayed inside them: hours of copying. Making and copying run at a few hundred MB/s into fresh pages, so a
  // runaway fails in seconds (about 9 s on the slowest machine measured; docs/limits.md). A template that rebuilds
  // its output at each message (`ns.out = ns.out ~ ...`) moves messages x output: llama.cpp's Reka-Edge template
  // renders 400 pairs of 1 KB messages (about 200k tokens) in 3.8 s.
  uint64_t max_string_bytes = 2ull << 30;
};

struct RenderOptions {
  Limits limits;
  // The time strftime_now() formats (local time); unset: now.
  std::function<std::tm()> now;
  // When set, the render stops with an error once it reads true (checked at every loop iteration, macro call and
  // string or list made): a server shutting down does not wait for a long render.
  const std::atomic<bool>* cancel = nullptr;
};

class Template {
 public:
  // Parses `source` (trim_blocks and lstrip_blocks on, as Hugging Face sets them). Errors are invalid_argument
  // naming the line and column.
  static Result<Template> parse(const std::string& source, const Limits& limits = {});

  // Thread-safe: a parsed Template is immutable and each render has its own state.
  // Renders with `vars` as the template's global variables (plus the built-ins: namespace, range,
  // raise_exception, strftime_now, true/false/none). Errors (raise_exception included) are invalid_argument
  // with the line and column of the innermost failing expression.
  Result<std::string> render(const std::vector<std::pair<std::string, Value>>& vars,
                             const RenderOptions& options = {}) const;

  struct Node;

 private:
  std::shared_ptr<Node> root_;
  std::shared_ptr<const std::vector<size_t>> line_starts_;
};

}  // namespace kvshare::jinja

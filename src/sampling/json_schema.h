// A JSON Schema (OpenAI's response_format {"type": "json_schema"}, vLLM's structured_outputs.json), compiled to the
// nodes that JSON mode's recognizer (JsonPrefix, src/sampling/json_guide.h) follows a byte at a time. JSON mode
// without a schema (json_object) follows the schema of any object.
//
// What a schema may say (docs/limits.md lists it for users); anything else is refused with the keyword named, so
// that no output is ever written that the schema does not accept:
// - type: object, array, string, number, integer, boolean, null, or a list of them; without one, any type;
// - objects: properties (written in the order given; those not in `required` may be left out), required, and
//   additionalProperties: false, or absent where properties are given (no other keys: OpenAI's strict mode), or any
//   schema where no properties are given (keys of any text, values that follow it);
// - arrays: items, minItems, maxItems; strings: minLength, maxLength (in characters, as JSON Schema counts them);
// - numbers: minimum, maximum, exclusiveMinimum, exclusiveMaximum (a number, or draft 4's boolean) (NumberRange);
// - strings: format date, time, date-time or uuid (json_format.h; other formats are refused, a format on another
//   type says nothing); pattern (json_pattern.h), without lengths or a format beside it;
// - enum and const (of any JSON values, written compactly; both together, as Pydantic writes a Literal), anyOf, oneOf
//   (whose alternatives begin with different characters, or are objects told apart by a required property's const or
//   enum values: a discriminator), allOf of one schema, $ref into $defs or definitions, or "#";
// - annotations, which say nothing of the text: title, description, default, examples, $schema, $id, $comment,
//   deprecated, readOnly, writeOnly, discriminator.
#pragma once

#include <bitset>
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "kvshare/sampling_params.h"
#include "sampling/json_format.h"
#include "sampling/json_number.h"
#include "sampling/json_pattern.h"

namespace kvshare {

class JsonSchema {
 public:
  static constexpr size_t kMaxBytes = SamplingParams::kMaxJsonSchemaBytes;  // compiling is linear in this
  static constexpr uint32_t kMaxNesting = 128;  // objects and arrays in one another (JsonPrefix::kMaxDepth)

  enum class Kind : uint8_t { kObject, kArray, kString, kNumber, kLiteral, kUnion };
  struct Property {
    std::string key;  // the key as the output writes it: a JSON string, quotes included
    int32_t value = 0;
    bool required = false;
  };
  struct Node {
    Kind kind = Kind::kUnion;
    // kObject: the keys, in the order they are written; `other_values`: the schema of the values of keys of any
    // text (only where no properties are given), -1 for no other keys.
    std::vector<Property> properties;
    int32_t other_values = -1;
    // kArray
    int32_t items = -1;
    uint32_t min_items = 0, max_items = UINT32_MAX;
    // kString: characters (code points, an escape one), and a format its text follows (json_format.h)
    uint32_t min_length = 0, max_length = UINT32_MAX;
    StringFormat format = StringFormat::kNone;
    std::shared_ptr<const Pattern> pattern;  // a pattern the text matches (json_pattern.h)
    // kNumber; `range`: its bounds (written then without an exponent), none for any number
    bool integer = false;
    std::optional<NumberRange> range;
    // kLiteral: the values it may be, as compact JSON texts, sorted
    std::vector<std::string> texts;
    // kUnion: the alternatives, a value follows one or more of them; `one_of`: exactly one (oneOf), so they are
    // told apart by their first byte or a discriminating property (checked when compiled)
    std::vector<int32_t> alternatives;
    bool one_of = false;
    std::bitset<256> first;  // the bytes a value of this node can begin with
    // The fewest objects and arrays a value of it nests (0 for a string; 1 for an object with no required keys),
    // so that no value is begun that cannot close within JsonPrefix::kMaxDepth.
    uint32_t min_depth = 0;
  };

  // The schema in `text` (a JSON object or boolean), checked and compiled; an error names what is not supported or
  // not valid, and where (a JSON pointer into the schema).
  static Result<std::shared_ptr<const JsonSchema>> compile(std::string_view text);
  // Any JSON object (json_object).
  static std::shared_ptr<const JsonSchema> any_object();
  // The text of a schema a request gives (the server's and a batch line's fields): an object or a boolean as
  // compact JSON, its properties in their order; a string as it is (vLLM takes a schema's text); nullopt for
  // anything else.
  static std::optional<std::string> text_of(const nlohmann::ordered_json& given);

  int32_t root() const { return 0; }
  const Node& node(int32_t id) const { return nodes_[static_cast<size_t>(id)]; }
  size_t size() const { return nodes_.size(); }
  // The bytes the output must write as the schema spells them (in keys and enum or const values), and those a
  // bounded number may need (its digits, '-' and '.').
  const std::bitset<256>& spelled_bytes() const { return spelled_; }

 private:
  class Compiler;
  std::vector<Node> nodes_;
  std::bitset<256> spelled_;
};

}  // namespace kvshare

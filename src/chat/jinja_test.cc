// Unit tests of the Jinja engine: expressions, filters, whitespace control, errors with positions, and the
// limits that keep hostile templates from crashing or running away. The byte-for-byte comparison with the
// reference implementation is in chat_template_test.cc.
#include "chat/jinja.h"

#include <gtest/gtest.h>

#include <random>

#include "chat/jinja_text.h"

namespace kvshare::jinja {
namespace {

using nlohmann::ordered_json;

Result<std::string> render(const std::string& source, const std::string& context_json = "{}", Limits limits = {}) {
  auto tpl = Template::parse(source, limits);
  if (!tpl.ok()) return tpl.status();
  std::vector<std::pair<std::string, Value>> vars;
  const auto ctx = ordered_json::parse(context_json);
  for (auto it = ctx.begin(); it != ctx.end(); ++it) vars.emplace_back(it.key(), Value::from_json(it.value()));
  RenderOptions options;
  options.limits = limits;
  return tpl->render(vars, options);
}

std::string ok(const std::string& source, const std::string& context_json = "{}") {
  auto r = render(source, context_json);
  EXPECT_TRUE(r.ok()) << source << "\n" << r.status().message();
  return r.ok() ? *r : "<error>";
}

std::string error(const std::string& source, const std::string& context_json = "{}", Limits limits = {}) {
  auto r = render(source, context_json, limits);
  EXPECT_FALSE(r.ok()) << source << " rendered as: " << (r.ok() ? *r : "");
  return r.ok() ? "" : r.status().message();
}

TEST(Jinja, Expressions) {
  EXPECT_EQ(ok("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ 2 ** 3 ** 2 }} {{ 10 / 4 }}"), "7 3 -4 1 64 2.5");
  EXPECT_EQ(ok("{{ 1.0 }} {{ 3 * 1.0 }} {{ 0.1 + 0.2 }} {{ 1 / 3 }}"), "1.0 3.0 0.30000000000000004 0.3333333333333333");
  EXPECT_EQ(ok("{{ 'a' ~ 1 ~ 2.0 }} {{ 'a' + 'b' }} {{ 'x' * 1 if false else 'y' }}"), "a12 ab y");
  EXPECT_EQ(ok("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}"), "true true true true");
  EXPECT_EQ(ok("{{ x.y.z }}|{{ x is defined }}|{{ none is none }}", "{}"), "|false|true");
  EXPECT_EQ(ok("{{ [1, 2, 3][1:] }} {{ 'hello'[::-1] }} {{ [1, 2, 3][-1] }}"), "[2, 3] olleh 3");
  EXPECT_EQ(ok("{{ {'a': 1, 'b': [true, none]} }}"), R"({"a": 1, "b": [true, null]})");
  EXPECT_EQ(ok("{{ 'yes' if 0 else 'no' }} {{ 1 if true }}"), "no 1");
  EXPECT_EQ(ok("{{ 1 == '1' }} {{ none == x }} {{ [1] == [1] }}"), "true true false");
}

TEST(Jinja, Statements) {
  EXPECT_EQ(ok("{% for x in xs %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", R"({"xs": ["a", "b"]})"),
            "1a,2b");
  EXPECT_EQ(ok("{% for k, v in d.items() %}{{ k }}={{ v }} {% endfor %}", R"({"d": {"z": 1, "a": 2}})"), "z=1 a=2 ");
  EXPECT_EQ(ok("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"), "6");
  EXPECT_EQ(ok("{% macro m(a, b='B') %}{{ a }}{{ b }}{% endmacro %}{{ m(1) }}{{ m(1, b=2) }}"), "1B12");
  EXPECT_EQ(ok("{% if a %}A{% elif b %}B{% else %}C{% endif %}", R"({"b": 1})"), "B");
  EXPECT_EQ(ok("{% set x %}in{{ 1 }}{% endset %}{{ x }}"), "in1");
  EXPECT_EQ(ok("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
}

TEST(Jinja, Filters) {
  EXPECT_EQ(ok("{{ '  a ' | trim }}|{{ 'ab' | upper }}|{{ [3, 1] | sort | join(',') }}|{{ 'x' | length }}"), "a|AB|1,3|1");
  EXPECT_EQ(ok("{{ xs | selectattr('k', 'equalto', 'x') | map(attribute='n') | list }}",
               R"({"xs": [{"k": "x", "n": "a"}, {"k": 2, "n": "b"}]})"),
            R"(["a"])");
  EXPECT_EQ(ok("{{ x | default('d') }} {{ '' | default('d', true) }} {{ '5' | int + 1 }} {{ 2 | float }}"), "d d 6 2.0");
  EXPECT_EQ(ok("{{ d | tojson }} {{ d | tojson(indent=2) }}", R"({"d": {"b": 1.5, "a": [1]}})"),
            "{\"b\": 1.5, \"a\": [1]} {\n  \"b\": 1.5,\n  \"a\": [\n    1\n  ]\n}");
  EXPECT_EQ(ok("{{ 'a\\nb' | indent(2, true) }}"), "  a\n  b");
  EXPECT_EQ(ok("{{ 'aXbX' | replace('X', '-') }} {{ [1, 1, 2] | unique | list }} {{ [1, 2] | reverse }}"), "a-b- [1, 2] [2, 1]");
  EXPECT_EQ(ok("{{ -3 | abs }} {{ 2.7 | int }} {{ 'abc'.startswith('a') }} {{ 'a,b'.split(',') }}"), "3 2 true [\"a\", \"b\"]");
}

TEST(Jinja, WhitespaceControl) {
  EXPECT_EQ(ok("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(ok("a\n  {%- if true %}\nb{% endif %}"), "ab");  // trim_blocks drops the newline after %}
  EXPECT_EQ(ok("x\n    {% if true %}y{% endif %}\n"), "x\ny");  // lstrip_blocks; one trailing newline dropped
  EXPECT_EQ(ok("a {#- c -#} b"), "ab");
  EXPECT_EQ(ok("{{ 1 }}\n{{ 2 }}"), "1\n2");  // trim_blocks does not touch }}
}

TEST(Jinja, ErrorsNameLineAndColumn) {
  std::string e = error("line one\n{{ raise_exception('boom') }}");
  EXPECT_NE(e.find("line 2, column"), std::string::npos) << e;
  EXPECT_NE(e.find("boom"), std::string::npos) << e;
  e = error("ok\n  {% if x %}\nno end");
  EXPECT_NE(e.find("syntax error"), std::string::npos) << e;
  EXPECT_NE(e.find("endif"), std::string::npos) << e;
  e = error("{{ 1 + }}");
  EXPECT_NE(e.find("line 1, column 8"), std::string::npos) << e;
  e = error("{% frobnicate %}");
  EXPECT_NE(e.find("Unknown statement type: frobnicate"), std::string::npos) << e;
  e = error("{{ 'a' + x }}");
  EXPECT_NE(e.find("undefined"), std::string::npos) << e;
  e = error("{{ x | nosuch }}", R"({"x": [1]})");
  EXPECT_NE(e.find("nosuch"), std::string::npos) << e;
  e = error("{% break %}");
  EXPECT_NE(e.find("outside of a loop"), std::string::npos) << e;
}

// Python Jinja features the reference (@huggingface/jinja 0.5.11) lacks are errors here too, as the reference's
// are, so a template renders the same way in both or fails in both. Reference messages, from
//   node -e 'const {Template}=require("@huggingface/jinja"); try { new Template(SRC).render({}) } catch (e) { console.log(e.message) }'
TEST(Jinja, FeaturesTheReferenceLacksAreErrors) {
  EXPECT_NE(error("{% raw %}{{ x }}{% endraw %}").find("Unknown statement type: raw"), std::string::npos);
  EXPECT_NE(error("{% for x in [1, 2] %}{{ loop.cycle('a', 'b') }}{% endfor %}").find("not a function"), std::string::npos);
  EXPECT_NE(error("{{ [1, 2.5] | sum }}").find("Unknown ArrayValue filter: sum"), std::string::npos);
  EXPECT_NE(error("{{ [1, 2] | count }}").find("Unknown ArrayValue filter: count"), std::string::npos);
  EXPECT_NE(error("{{ 2.567 | round(1) }}").find("Cannot apply filter \"round\" to type: FloatValue"), std::string::npos);
  EXPECT_NE(error("{{ 2 | round }}").find("Unknown NumericValue filter: round"), std::string::npos);
  EXPECT_NE(error("{{ x | d('y') }}").find("Cannot apply filter \"d\" to type: UndefinedValue"), std::string::npos);
  EXPECT_NE(error("{{ '<a>' | e }}").find("Unknown StringValue filter: e"), std::string::npos);
  EXPECT_NE(error("{{ '<a>' | escape }}").find("Unknown StringValue filter: escape"), std::string::npos);
  EXPECT_NE(error("{{ 'ab' | list }}").find("Unknown StringValue filter: list"), std::string::npos);
  // What the reference does support still renders (`default`, `list` of a list, `join` of a string).
  EXPECT_EQ(ok("{{ x | default('y') }} {{ [1] | list }} {{ 'ab' | join('-') }}"), "y [1] a-b");
}

// An error the interpreter cannot place (a value that fails deep inside a conversion) still reads as a sentence.
TEST(Jinja, ErrorWithoutPositionReadsWell) {
  auto tpl = Template::parse("{{ (1, 2) }}");
  ASSERT_TRUE(tpl.ok());
  auto r = tpl->render({});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().rfind("template error", 0), 0u) << r.status().message();
  EXPECT_NE(r.status().message().find("Cannot convert to JSON: TupleValue"), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find(" at Cannot"), std::string::npos) << r.status().message();
}

TEST(Jinja, LimitsStopRunawayTemplates) {
  // Deep nesting at parse time.
  std::string deep(5000, '(');
  EXPECT_NE(error("{{ " + deep + "1" + std::string(5000, ')') + " }}").find("nests deeper"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < 3000; ++i) ifs += "{% if true %}";
  EXPECT_NE(error(ifs).find("nests deeper"), std::string::npos);
  // Unbounded recursion at render time.
  EXPECT_NE(error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("nests deeper"), std::string::npos);
  // Loops that go on and on.
  Limits small;
  small.max_loop_iterations = 10000;
  EXPECT_NE(error("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "{}", small)
                .find("loop iterations"),
            std::string::npos);
  EXPECT_NE(error("{{ range(100000000) | length }}").find("range()"), std::string::npos);
  // Macro calls count too: two calls per level is 2^40 calls within the depth limit, without a loop.
  EXPECT_NE(error("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}")
                .find("loop iterations and macro calls"),
            std::string::npos);
  EXPECT_NE(error("{% macro g() %}{{ caller() }}{{ caller() }}{% endmacro %}"
                  "{% macro f(n) %}{% if n > 0 %}{% call g() %}{{ f(n - 1) }}{% endcall %}{% endif %}{% endmacro %}"
                  "{{ f(40) }}")
                .find("loop iterations and macro calls"),
            std::string::npos);
  // The default stops a runaway loop after 10^6 iterations (about a second).
  EXPECT_NE(error("{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}")
                .find("more than 1000000 loop iterations"),
            std::string::npos);
  // Output that doubles until it is huge.
  Limits tiny;
  tiny.max_output_bytes = 1 << 16;
  EXPECT_NE(error("{% set ns = namespace(s='xx') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
                  "{}", tiny)
                .find("limit"),
            std::string::npos);
}

// A loop that reads a long string at every iteration stays inside the step and size limits, but its work is
// steps x length: a 64 MiB string read 10^6 times is 64 TB to copy. The render's string bytes are budgeted.
TEST(Jinja, StringBytesOverTheRenderAreBudgeted) {
  Limits small;
  small.max_string_bytes = 1 << 20;
  const std::string kilobyte = "{% set ns = namespace(s='x') %}{% for i in range(10) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}";
  // ~1 KiB read 2000 times through a variable, a loop item, and a macro argument.
  for (const std::string& use : {std::string("{% for i in range(2000) %}{% if ns.s %}{% endif %}{% endfor %}"),
                                 std::string("{% set l = [ns.s] %}{% for i in range(2000) %}{% for x in l %}{% endfor %}{% endfor %}"),
                                 std::string("{% macro f(a) %}{% endmacro %}{% for i in range(2000) %}{{ f(ns.s) }}{% endfor %}"),
                                 // Lists copied or printed: each copy moves its strings.
                                 std::string("{% set l = [ns.s] %}{% for i in range(2000) %}{% set r = l|reverse %}{% endfor %}"),
                                 std::string("{% set d = {'k': ns.s} %}{% for i in range(2000) %}{% set r = d.values() %}{% endfor %}"),
                                 std::string("{% set l = [[ns.s]] %}{% for i in range(2000) %}{% if l == 'x' %}{% endif %}{% endfor %}")}) {
    EXPECT_NE(error(kilobyte + use, "{}", small).find("more than 1048576 bytes of strings"), std::string::npos) << use;
    // The same template at a twentieth of the work renders.
    std::string less = use;
    less.replace(less.find("2000"), 4, "100");
    EXPECT_TRUE(render(kilobyte + less, "{}", small).ok()) << less;
  }
}

// A list's items count toward the budget besides its strings: splitting 64 KiB of spaces makes 65,537 empty
// strings, nothing by their bytes, and a loop that split it 10^6 times ran for about a day.
TEST(Jinja, ListItemsOverTheRenderAreBudgeted) {
  Limits budget;
  budget.max_string_bytes = 128 << 20;
  const std::string spaces =
      "{% set ns = namespace(s=' ') %}{% for i in range(16) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}";
  const std::string split_2000 = "{% for i in range(2000) %}{% set parts = ns.s.split(' ') %}{% endfor %}";
  EXPECT_NE(error(spaces + split_2000, "{}", budget).find("bytes of strings and lists"), std::string::npos);
  const std::string split_5 = "{% for i in range(5) %}{% set parts = ns.s.split(' ') %}{% endfor %}{{ ns.s.split(' ')|length }}";
  auto five = render(spaces + split_5, "{}", budget);
  ASSERT_TRUE(five.ok()) << five.status().message();
  EXPECT_EQ(*five, "65537");
  // One split() makes at most max_range pieces, counted before any is made (a 64 MiB string holds 64M).
  Limits ten;
  ten.max_range = 10;
  EXPECT_EQ(ok("{{ 'a,b,c,d,e,f,g,h,i,j'.split(',')|length }}"), "10");
  EXPECT_NE(error("{{ 'a,b,c,d,e,f,g,h,i,j,k'.split(',') }}", "{}", ten).find("split() would make more than 10 pieces"),
            std::string::npos);
  EXPECT_NE(error("{{ 'a b c d e f g h i j k'.split() }}", "{}", ten).find("split() would make more than 10 pieces"),
            std::string::npos);
  auto capped = render("{{ 'a,b,c,d,e,f,g,h,i,j,k'.split(',', 3) }}", "{}", ten);
  ASSERT_TRUE(capped.ok()) << capped.status().message();
  EXPECT_EQ(*capped, R"(["a", "b", "c", "d,e,f,g,h,i,j,k"])");
}

// A render stops when its cancel flag is set (a server shutting down), at its next loop iteration.
TEST(Jinja, RenderStopsWhenCancelled) {
  auto tpl = Template::parse("{% for i in range(3) %}{{ i }}{% endfor %}");
  ASSERT_TRUE(tpl.ok());
  std::atomic<bool> cancel{false};
  RenderOptions options;
  options.cancel = &cancel;
  auto r = tpl->render({}, options);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, "012");
  cancel = true;
  r = tpl->render({}, options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("the render was cancelled"), std::string::npos) << r.status().message();
}

// A template's source has a size limit, checked before parsing (a mistaken file is refused at once), and a
// control character in an error message is named by its code point (printed raw it shows nothing).
TEST(Jinja, SourceSizeLimitAndControlCharactersInErrors) {
  Limits limits;
  limits.max_template_bytes = 1000;
  auto at_limit = render(std::string(1000, 'a'), "{}", limits);
  ASSERT_TRUE(at_limit.ok()) << at_limit.status().message();
  EXPECT_EQ(*at_limit, std::string(1000, 'a'));
  EXPECT_NE(error(std::string(1001, 'a'), "{}", limits).find("the template is 1001 bytes, more than a chat template may have (1000)"),
            std::string::npos);
  EXPECT_NE(error("{{ x \x01 }}").find("Unexpected character: U+0001"), std::string::npos);
}

// A template that rebuilds its whole output at each message (as some real ones do) moves messages x output
// bytes: the default budget holds it for a conversation longer than a 128k-token context.
TEST(Jinja, AccumulatingTemplatesRenderLongConversations) {
  const std::string tmpl =
      "{% set ns = namespace(out='') %}{% for m in messages %}"
      "{% set ns.out = ns.out + '<|' + m.role + '|>' + m.content + '<|end|>' %}{% endfor %}{{ ns.out }}";
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  const std::string content(1000, 'w');  // about 250 tokens
  for (int i = 0; i < 600; ++i)  // 600 KB, about 150k tokens
    messages.push_back({{"role", i % 2 ? "assistant" : "user"}, {"content", content}});
  auto r = render(tmpl, nlohmann::ordered_json{{"messages", messages}}.dump());
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->size(), 300u * (2 + 4 + 2 + 1000 + 7) + 300u * (2 + 9 + 2 + 1000 + 7));
}

TEST(Jinja, MalformedTemplatesNeverCrash) {
  const std::string seed =
      "{%- set ns = namespace(a=1) -%}{% for m in messages if m.role != 'x' %}{{ m['content'] | trim ~ loop.index }}"
      "{% if loop.last and x is not defined %}{{ raise_exception('e') if false }}{% endif %}{% endfor %}"
      "{% macro q(a, b=2) %}{{ a[1:] }}{{ b | tojson(indent=2) }}{% endmacro %}{{ q('xyz') }}{# c #}{{ {'k': [1, 2.5]} }}";
  std::mt19937 rng(7);
  const std::string alphabet = "{}%#-()[]|.,:'\"~+*/ \nabcinotfrsel=!<>0123456789\\";
  const std::string ctx = R"({"messages": [{"role": "user", "content": " hi "}, {"role": "assistant", "content": 3}]})";
  for (int i = 0; i < 3000; ++i) {
    std::string t = seed;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % (t.size() + 1);
      switch (rng() % 3) {
        case 0: t.insert(pos, 1, alphabet[rng() % alphabet.size()]); break;
        case 1: if (pos < t.size()) t.erase(pos, 1 + rng() % 3); break;
        default: t = t.substr(0, pos); break;
      }
    }
    (void)render(t, ctx);  // any Status is fine; crashing or hanging is not
  }
}

TEST(JinjaText, JavaScriptNumbers) {
  EXPECT_EQ(text::js_number(1e21), "1e+21");
  EXPECT_EQ(text::js_number(123.456), "123.456");
  EXPECT_EQ(text::js_number(1e-7), "1e-7");
  EXPECT_EQ(text::js_number(0.000001), "0.000001");
  EXPECT_EQ(text::js_number(-2.5), "-2.5");
  EXPECT_EQ(text::js_float(3), "3.0");
  EXPECT_EQ(text::js_float(-0.0), "-0.0");
  EXPECT_EQ(text::json_quote("a\"\n\x01é", false), "\"a\\\"\\n\\u0001é\"");
  EXPECT_EQ(text::json_quote("é😀", true), "\"\\u00e9\\ud83d\\ude00\"");
  double d;
  EXPECT_TRUE(text::parse_int("  42abc", d));
  EXPECT_EQ(d, 42);
  EXPECT_FALSE(text::parse_int("abc", d));
  EXPECT_TRUE(text::to_number(" 12 ", d));
  EXPECT_FALSE(text::to_number("12a", d));
}

}  // namespace
}  // namespace kvshare::jinja

// The YAML subset of compressctl's spec files (client/yaml_lite.h) and its use by the spec
// reader (client/spec_file.h): every construct, every error with its line and column, and the
// shipped YAML example against its JSON twin.
#include "client/yaml_lite.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "client/spec_file.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace compress::client {
namespace {

using ::nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Parses `text` as the file "t.yaml"; on failure, records it and returns a string that no
// test expects.
json Parse(const std::string& text) {
  absl::StatusOr<json> parsed = ParseYamlLite(text, "t.yaml");
  EXPECT_TRUE(parsed.ok()) << parsed.status() << "\n--- for:\n" << text;
  return parsed.ok() ? *parsed : json("<parse error>");
}

// The message of the error that parsing `text` as "t.yaml" must give.
std::string ErrorOf(const std::string& text) {
  absl::StatusOr<json> parsed = ParseYamlLite(text, "t.yaml");
  if (parsed.ok()) {
    ADD_FAILURE() << "parsed, expected an error, for:\n" << text << "\n--- got " << parsed->dump();
    return "";
  }
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

TEST(YamlLiteTest, BlockMappingsNestByIndentation) {
  EXPECT_EQ(Parse("a: 1\nb:\n  c: x\n  d:\n      e: true\nf: 2\n"),
            json::parse(R"({"a": 1, "b": {"c": "x", "d": {"e": true}}, "f": 2})"));
  // The order of the keys is irrelevant to JSON; a key with nothing after it is null.
  EXPECT_EQ(Parse("z: 1\nempty:\ny: 2"), json::parse(R"({"z": 1, "empty": null, "y": 2})"));
  // Spaces before the ':' and more than one after it.
  EXPECT_EQ(Parse("a  :   1"), json::parse(R"({"a": 1})"));
  // Quoted keys, and keys that only look like other types stay strings.
  EXPECT_EQ(Parse("\"a b\": 1\n'c: d': 2\n3: x\ntrue: y"),
            json::parse(R"({"a b": 1, "c: d": 2, "3": "x", "true": "y"})"));
  // A top-level mapping may be indented as a whole.
  EXPECT_EQ(Parse("  a: 1\n  b: 2\n"), json::parse(R"({"a": 1, "b": 2})"));
}

TEST(YamlLiteTest, BlockSequences) {
  EXPECT_EQ(Parse("- 1\n- two\n- 3.5\n"), json::parse(R"([1, "two", 3.5])"));
  EXPECT_EQ(Parse("a:\n  - 1\n  - 2\nb: 3"), json::parse(R"({"a": [1, 2], "b": 3})"));
  // A sequence may sit at its key's own indentation.
  EXPECT_EQ(Parse("a:\n- 1\n- 2\nb: 3"), json::parse(R"({"a": [1, 2], "b": 3})"));
  // Mappings as items: the first entry on the "- " line, the others aligned with it.
  EXPECT_EQ(Parse("items:\n  - name: a\n    size: 1\n  -   name: b\n      size: 2\n  - c\n"),
            json::parse(R"({"items": [{"name": "a", "size": 1}, {"name": "b", "size": 2}, "c"]})"));
  // An item's mapping holding a sequence at the mapping's indentation.
  EXPECT_EQ(Parse("- a:\n  - 1\n  b: 2\n"), json::parse(R"([{"a": [1], "b": 2}])"));
  // Nested sequences, on the item's line or below it; an empty item is null.
  EXPECT_EQ(Parse("- - 1\n  - 2\n- \n  - 3\n-\n"), json::parse(R"([[1, 2], [3], null])"));
  EXPECT_EQ(Parse("- - a: 1\n    b: 2\n"), json::parse(R"([[{"a": 1, "b": 2}]])"));
  // A value on a line of its own below its key.
  EXPECT_EQ(Parse("a:\n  [1, 2]\nb:\n  'x'\n"), json::parse(R"({"a": [1, 2], "b": "x"})"));
}

TEST(YamlLiteTest, FlowCollectionsOfScalars) {
  EXPECT_EQ(Parse("a: [1, 2.5, x y, 'q', \"d\", true, ~, null]"),
            json::parse(R"({"a": [1, 2.5, "x y", "q", "d", true, null, null]})"));
  EXPECT_EQ(Parse("a: []\nb: {}\nc: [1,2 ,3, ]\n"),
            json::parse(R"({"a": [], "b": {}, "c": [1, 2, 3]})"));
  EXPECT_EQ(Parse("m: {a: 1, 'b': x, \"c\":2, d: , e:}"),
            json::parse(R"({"m": {"a": 1, "b": "x", "c": 2, "d": null, "e": null}})"));
  EXPECT_EQ(Parse("- [a, b]\n- {k: v}\n"), json::parse(R"([["a", "b"], {"k": "v"}])"));
  // The JSON spelling of a flow mapping is accepted too.
  EXPECT_EQ(Parse(R"(j: {"a": 1, "b": "x"})"), json::parse(R"({"j": {"a": 1, "b": "x"}})"));
}

TEST(YamlLiteTest, Scalars) {
  json doc = Parse(
      "int: 42\n"
      "neg: -7\n"
      "plus: +3\n"
      "big: 18446744073709551615\n"
      "float: 0.25\n"
      "exp: 1e-3\n"
      "exp2: -2.5E+2\n"
      "dot: .5\n"
      "t: true\n"
      "f: False\n"
      "n1: null\n"
      "n2: ~\n"
      "plain: hello world\n"
      "path: /usr/share/data-set\n"
      "url: http://host:80/x\n"
      "hashless: a#b\n"
      "version: 1.2.3\n"
      "dash: -x\n"
      "yes: yes\n"
      "single: 'it''s # not a comment'\n"
      "double: \"tab\\tnl\\nq\\\"bs\\\\sl\\/\"\n"
      "unicode: \"\\u00e9\\x41\\U0001F600\"\n"
      "empty_single: ''\n"
      "empty_double: \"\"\n"
      "quoted_number: '42'\n"
      "utf8: h\xC3\xA9llo\n");
  EXPECT_EQ(doc["int"], json(42));
  EXPECT_TRUE(doc["int"].is_number_integer());
  EXPECT_EQ(doc["neg"], json(-7));
  EXPECT_EQ(doc["plus"], json(3));
  EXPECT_EQ(doc["big"], json(18446744073709551615ULL));
  EXPECT_EQ(doc["float"], json(0.25));
  EXPECT_TRUE(doc["exp"].is_number_float());
  EXPECT_DOUBLE_EQ(doc["exp"].get<double>(), 1e-3);
  EXPECT_DOUBLE_EQ(doc["exp2"].get<double>(), -250.0);
  EXPECT_DOUBLE_EQ(doc["dot"].get<double>(), 0.5);
  EXPECT_EQ(doc["t"], json(true));
  EXPECT_EQ(doc["f"], json(false));
  EXPECT_TRUE(doc["n1"].is_null());
  EXPECT_TRUE(doc["n2"].is_null());
  EXPECT_EQ(doc["plain"], json("hello world"));
  EXPECT_EQ(doc["path"], json("/usr/share/data-set"));
  EXPECT_EQ(doc["url"], json("http://host:80/x"));
  EXPECT_EQ(doc["hashless"], json("a#b"));
  EXPECT_EQ(doc["version"], json("1.2.3"));
  EXPECT_EQ(doc["dash"], json("-x"));
  EXPECT_EQ(doc["yes"], json("yes"));  // YAML 1.2: only true/false are booleans
  EXPECT_EQ(doc["single"], json("it's # not a comment"));
  EXPECT_EQ(doc["double"], json("tab\tnl\nq\"bs\\sl/"));
  EXPECT_EQ(doc["unicode"], json("\xC3\xA9"
                                 "A"
                                 "\xF0\x9F\x98\x80"));
  EXPECT_EQ(doc["empty_single"], json(""));
  EXPECT_EQ(doc["empty_double"], json(""));
  EXPECT_EQ(doc["quoted_number"], json("42"));
  EXPECT_EQ(doc["utf8"], json("h\xC3\xA9llo"));
  // A document that is a single scalar.
  EXPECT_EQ(Parse("just text\n"), json("just text"));
}

TEST(YamlLiteTest, CommentsBlankLinesAndTheDocumentMarker) {
  EXPECT_EQ(Parse("# head\n---   # the document\n\na: 1 # one\n   # indented comment\n"
                  "b: 'x # y'  # two\nc: \"#\"\nd: [1, 2]  # three\n# tail"),
            json::parse(R"({"a": 1, "b": "x # y", "c": "#", "d": [1, 2]})"));
  EXPECT_EQ(Parse("---\n- 1\n"), json::parse("[1]"));
  EXPECT_EQ(Parse("a: 1\r\nb: 2\r\n"), json::parse(R"({"a": 1, "b": 2})"));  // CRLF
  EXPECT_EQ(Parse("\xEF\xBB\xBF"
                  "a: 1"),
            json::parse(R"({"a": 1})"));  // byte order mark
  EXPECT_TRUE(Parse("").is_null());
  EXPECT_TRUE(Parse("# nothing\n---\n").is_null());
  EXPECT_EQ(Parse("---x: 1"), json::parse(R"({"---x": 1})"));
}

TEST(YamlLiteTest, ErrorsNameFileLineColumnAndWhatWasExpected) {
  struct Case {
    std::string text;
    std::string message;  // the whole message
  };
  const Case cases[] = {
      // Tabs.
      {"a:\n\tb: 1", "t.yaml:2:1: tab character in the indentation: indent with spaces"},
      {"a: 1\n  \tb: 1", "t.yaml:2:3: tab character in the indentation: indent with spaces"},
      {"a:\t1", "t.yaml:1:3: tab character: use spaces"},
      {"a: [1,\t2]", "t.yaml:1:7: tab character: use spaces"},
      // Left-out features.
      {"a: &x 1", "t.yaml:1:4: anchors ('&') are not supported"},
      {"a: 1\nb: *x", "t.yaml:2:4: aliases ('*') are not supported"},
      {"a: !!str 1", "t.yaml:1:4: tags ('!') are not supported"},
      {"a: |\n  text",
       "t.yaml:1:4: block scalars ('|', '>') are not supported: write the value "
       "on one line, in quotes if needed"},
      {"a: >-\n  text",
       "t.yaml:1:4: block scalars ('|', '>') are not supported: write the value "
       "on one line, in quotes if needed"},
      {"%YAML 1.2\n---\na: 1", "t.yaml:1:1: directives ('%') are not supported"},
      {"a: @x", "t.yaml:1:4: '@' is reserved: quote a value that starts with it"},
      {"? a\n: 1", "t.yaml:1:1: complex keys ('? ') are not supported"},
      {"a: 1\n---\nb: 2",
       "t.yaml:2:1: a second document ('---') is not supported: one document per file"},
      {"a: 1\n...", "t.yaml:2:1: the document end marker '...' is not supported"},
      {"--- a: 1", "t.yaml:1:5: expected the end of the line after '---', found 'a'"},
      {"a: [1, [2]]", "t.yaml:1:8: nested flow collections are not supported"},
      {"a: {b: {c: 1}}", "t.yaml:1:8: nested flow collections are not supported"},
      // Multi-line values.
      {"a: hello\n  world", "t.yaml:2:3: inconsistent indentation: expected 0 spaces, found 2"},
      {"a: \"one\n  two\"",
       "t.yaml:1:4: unterminated double-quoted string: expected the closing quote on the same "
       "line (multi-line strings are not supported)"},
      {"a: 'one",
       "t.yaml:1:4: unterminated single-quoted string: expected the closing quote on "
       "the same line (multi-line strings are not supported)"},
      {"a: [1, 2\n  , 3]",
       "t.yaml:1:4: unterminated flow collection: expected ']' on the same "
       "line (flow collections cannot span lines)"},
      {"a: {b: 1 # c}",
       "t.yaml:1:4: unterminated flow collection: expected '}' on the same line "
       "(flow collections cannot span lines)"},
      // Duplicate keys.
      {"a: 1\nb: 2\na: 3", "t.yaml:3:1: duplicate key \"a\" (first on line 1)"},
      {"x:\n  - k: 1\n    k: 2", "t.yaml:3:5: duplicate key \"k\" (first on line 2)"},
      {"a: {k: 1, k: 2}", "t.yaml:1:11: duplicate key \"k\""},
      // Indentation.
      {"a:\n    b: 1\n  c: 2", "t.yaml:3:3: inconsistent indentation: expected 0 spaces, found 2"},
      {"a:\n  b: 1\n   c: 2", "t.yaml:3:4: inconsistent indentation: expected 2 spaces, found 3"},
      {"- 1\n  - 2", "t.yaml:2:3: inconsistent indentation: expected 0 spaces, found 2"},
      {"a:\n  - 1\n  b: 2", "t.yaml:3:3: expected a sequence item ('- ') at this indentation"},
      {"- 1\nb: 2", "t.yaml:2:1: expected a sequence item ('- ') at this indentation"},
      {"a: 1\n- 2", "t.yaml:2:1: expected 'key: value', found a sequence item ('- ')"},
      {"  a: 1\nb: 2", "t.yaml:2:1: inconsistent indentation: expected 2 spaces, found 0"},
      // Mapping syntax.
      {"a: 1\nfoo bar",
       "t.yaml:2:8: expected ':' after the key \"foo bar\" (a mapping entry is "
       "'key: value')"},
      {"a: 1\nb:2",
       "t.yaml:2:4: expected ':' after the key \"b:2\" (a mapping entry is "
       "'key: value')"},
      {"a: 1\n: 2", "t.yaml:2:1: expected a key before ':'"},
      {"a: 1\n[x]: 2", "t.yaml:2:1: expected a key: a flow collection cannot be a key"},
      {"a: b: c",
       "t.yaml:1:5: a mapping cannot start here: put a nested mapping on lines of "
       "its own"},
      {"a: - 1",
       "t.yaml:1:4: a sequence item ('- ') cannot start here: put it on a line of its "
       "own"},
      {"a: 'x' y", "t.yaml:1:8: expected the end of the line after the value, found 'y'"},
      {"a: [1, 2] 3", "t.yaml:1:11: expected the end of the line after the value, found '3'"},
      {"a: \"x\"# c", "t.yaml:1:7: expected the end of the line after the value, found '#'"},
      {"one\ntwo", "t.yaml:2:1: expected the end of the document: a document is a single value"},
      // Flow collections.
      {"a: [1 2, 3}", "t.yaml:1:11: expected ',' or ']' in the flow sequence, found '}'"},
      {"a: [1, , 2]", "t.yaml:1:8: expected a value, found ','"},
      {"a: {b}", "t.yaml:1:6: expected ': ' after the key \"b\" in the flow mapping"},
      {"a: {b: 1 c: 2}", "t.yaml:1:11: expected ',' or '}' in the flow mapping, found ':'"},
      {"a: {: 1}", "t.yaml:1:5: expected a key"},
      {"a: {b: 1]", "t.yaml:1:9: expected ',' or '}' in the flow mapping, found ']'"},
      {"a: ]", "t.yaml:1:4: expected a value, found ']'"},
      // Escapes, numbers and bytes.
      {"a: \"\\q\"", "t.yaml:1:5: unknown escape '\\q' in a double-quoted string"},
      {"a: \"\\u12g4\"", "t.yaml:1:9: expected 4 hexadecimal digits after '\\u'"},
      {"a: \"\\ud800\"",
       "t.yaml:1:5: the escape is not a Unicode scalar value (U+0000..U+10FFFF, "
       "no surrogates)"},
      {"a: 1e999", "t.yaml:1:4: the number is out of range"},
      {"a: .nan", "t.yaml:1:4: '.nan': must be a finite number"},
      {"a: [1, -.inf]", "t.yaml:1:8: '-.inf': must be a finite number"},
      {"a: 1\nb: \xC3(", "t.yaml:2:4: invalid UTF-8"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(ErrorOf(c.text), c.message) << "for:\n" << c.text;
  }
}

// The JSON the YAML reader gives for `yaml`, and that of the JSON text, parse to equal specs.
TEST(YamlSpecFileTest, ShippedYamlExampleEqualsTheJsonOne) {
  const std::string dir = std::string(COMPRESS_SOURCE_DIR) + "/client/examples/";
  absl::StatusOr<compress::v1::JobSpec> from_json = LoadJobSpecFile(dir + "default-job.json");
  absl::StatusOr<compress::v1::JobSpec> from_yaml = LoadJobSpecFile(dir + "default-job.yaml");
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  ASSERT_TRUE(from_yaml.ok()) << from_yaml.status();
  std::string difference;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&difference);
  EXPECT_TRUE(differencer.Compare(*from_json, *from_yaml))
      << "default-job.yaml and default-job.json differ:\n"
      << difference;
  EXPECT_EQ(from_json->SerializeAsString(), from_yaml->SerializeAsString());
  // Not trivially equal: the example sets the fields the JSON sets.
  EXPECT_EQ(from_yaml->model().config().depths_size(), 2);
  EXPECT_EQ(from_yaml->dataset().format(), "fashion_mnist");
  EXPECT_FLOAT_EQ(from_yaml->teacher().train().lr(), 0.002f);
  EXPECT_TRUE(from_yaml->prune().enabled());
  EXPECT_EQ(from_yaml->resources().seed(), 1);
}

TEST(YamlSpecFileTest, FormatFollowsTheExtensionThenTheFirstCharacter) {
  const std::string yaml = "dataset:\n  format: synthetic\nteacher:\n  train: {epochs: 1}\n";
  const std::string json_text = R"({"dataset": {"format": "synthetic"},
                                     "teacher": {"train": {"epochs": 1}}})";
  for (const char* name : {"s.yaml", "s.yml", "S.YML", "spec", "spec.txt"}) {
    absl::StatusOr<compress::v1::JobSpec> spec = ParseJobSpecText(yaml, name);
    ASSERT_TRUE(spec.ok()) << name << ": " << spec.status();
    EXPECT_EQ(spec->dataset().format(), "synthetic");
    EXPECT_EQ(spec->teacher().train().epochs(), 1);
  }
  for (const char* name : {"s.json", "spec", "spec.txt"}) {
    absl::StatusOr<compress::v1::JobSpec> spec = ParseJobSpecText(json_text, name);
    ASSERT_TRUE(spec.ok()) << name << ": " << spec.status();
    EXPECT_EQ(spec->teacher().train().epochs(), 1);
  }
  // The extension wins over the content: YAML text in a .json file is read as JSON, and the
  // JSON text in a .yaml file is read as YAML (whose flow mappings hold only scalars).
  EXPECT_THAT(std::string(ParseJobSpecText(yaml, "s.json").status().message()),
              StartsWith("s.json: not a compress.v1.JobSpec"));
  EXPECT_EQ(std::string(ParseJobSpecText(json_text, "s.yaml").status().message()),
            "s.yaml:1:13: nested flow collections are not supported");
}

TEST(YamlSpecFileTest, ErrorsNameTheFileAndTheFieldOrTheLine) {
  // Syntax: file, line and column.
  absl::StatusOr<compress::v1::JobSpec> syntax =
      ParseJobSpecText("dataset:\n  format: synthetic\n  format: x\n", "my.yaml");
  EXPECT_EQ(syntax.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(syntax.status().message()),
            "my.yaml:3:3: duplicate key \"format\" (first on line 2)");

  // Unknown fields and wrong types: the protobuf JSON parser names them.
  absl::StatusOr<compress::v1::JobSpec> unknown =
      ParseJobSpecText("model:\n  presett: swin_t\n", "my.yaml");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unknown.status().message()), StartsWith("my.yaml: "));
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("presett"));
  absl::StatusOr<compress::v1::JobSpec> wrong_type =
      ParseJobSpecText("dataset:\n  image_size: big\n", "my.yaml");
  EXPECT_THAT(std::string(wrong_type.status().message()), StartsWith("my.yaml: "));
  EXPECT_THAT(std::string(wrong_type.status().message()), HasSubstr("dataset.image_size"));

  // Validation (worker/spec): the field and its rule.
  absl::StatusOr<compress::v1::JobSpec> invalid = ParseJobSpecText(
      "dataset: {format: synthetic}\n"
      "teacher:\n"
      "  train: {epochs: 1}\n"
      "prune:\n"
      "  enabled: true\n"
      "  target_macs_reduction: 1.5\n",
      "my.yaml");
  EXPECT_EQ(invalid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(invalid.status().message()),
              StartsWith("my.yaml: spec.prune.target_macs_reduction"));

  // A document that is not a mapping.
  for (const char* text : {"", "# only a comment\n", "- a\n", "42\n"}) {
    absl::StatusOr<compress::v1::JobSpec> not_mapping = ParseJobSpecText(text, "my.yaml");
    EXPECT_EQ(not_mapping.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_EQ(std::string(not_mapping.status().message()),
              "my.yaml: expected a mapping of compress.v1.JobSpec fields at the top level")
        << text;
  }
}

TEST(YamlSpecFileTest, LoadsAYamlFileByPath) {
  const std::string path = ::testing::TempDir() + "/yaml_lite_test_spec.yml";
  {
    std::ofstream out(path, std::ios::binary);
    out << "# a tiny job\ndataset:\n  format: synthetic\nteacher:\n  train:\n    epochs: 1\n"
           "resources: {device: cpu, seed: 7}\n";
  }
  absl::StatusOr<compress::v1::JobSpec> spec = LoadJobSpecFile(path);
  std::remove(path.c_str());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->resources().device(), "cpu");
  EXPECT_EQ(spec->resources().seed(), 7);
  EXPECT_EQ(LoadJobSpecFile("/nonexistent/spec.yaml").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace compress::client

#include "worker/events/event.h"

#include <cmath>
#include <cstdio>
#include <string>

#include "gtest/gtest.h"

namespace compress::events {
namespace {

TEST(EventTest, EveryTypeRoundTrips) {
  std::vector<Event> events = {
      PhaseStarted("teacher"),
      PhaseFinished("teacher", 12.5, {{"top1", 0.87}, {"loss", 0.4}}),
      Metric("distill", 120, 1.5, 0.25, {{"loss", 0.75}, {"lr", 1e-4}}),
      Log("warning", "line with \"quotes\" and \n newline"),
      ArtifactReady("model.safetensors", "/tmp/w/model.safetensors", std::string(64, 'a'), 1234),
      Report({{"teacher", {{"top1", 0.9}}}}),
      Error(absl::NotFoundError("dataset.path: /nope: no such directory")),
  };
  for (const Event& e : events) {
    std::string line = Serialize(e);
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    auto parsed = Parse(line);
    ASSERT_TRUE(parsed.ok()) << parsed.status() << " for " << line;
    EXPECT_EQ(parsed->type, e.type);
    EXPECT_DOUBLE_EQ(parsed->time, e.time);
    EXPECT_EQ(parsed->phase, e.phase);
    EXPECT_EQ(parsed->step, e.step);
    EXPECT_EQ(parsed->values, e.values);
    EXPECT_EQ(parsed->message, e.message);
    EXPECT_EQ(parsed->code, e.code);
    EXPECT_EQ(parsed->name, e.name);
    EXPECT_EQ(parsed->sha256, e.sha256);
    EXPECT_EQ(parsed->size_bytes, e.size_bytes);
    EXPECT_EQ(parsed->report, e.report);
    EXPECT_EQ(Serialize(*parsed), line);
  }
}

TEST(EventTest, ErrorCarriesCanonicalCodeName) {
  Event e = Error(absl::ResourceExhaustedError("CUDA out of memory"));
  EXPECT_EQ(e.code, "RESOURCE_EXHAUSTED");
  EXPECT_EQ(StatusCodeFromName(e.code), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(StatusCodeFromName("NOT_A_CODE"), absl::StatusCode::kUnknown);
}

TEST(EventTest, NonFiniteValuesBecomeNullAndParseAsNan) {
  Event e = Metric("teacher", 3, 0, -1, {{"loss", std::nan("")}, {"lr", INFINITY}});
  std::string line = Serialize(e);
  EXPECT_NE(line.find("\"loss\":null"), std::string::npos) << line;
  EXPECT_EQ(line.find("progress"), std::string::npos) << "unknown progress is not written";
  auto parsed = Parse(line);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(std::isnan(parsed->values.at("loss")));
  EXPECT_LT(parsed->progress, 0);
}

TEST(EventTest, MalformedLinesNameTheProblem) {
  struct Case {
    const char* line;
    const char* expected;
  } cases[] = {
      {"not json", "not valid JSON"},
      {"[1,2]", "not a JSON object"},
      {R"({"type":"explode"})", "unknown event type 'explode'"},
      {R"({"type":"metric","phase":"x","step":"ten"})", "'step': expected an integer"},
      {R"({"type":"metric","step":1})", "'phase': missing"},
      {R"({"type":"metric","phase":"x","values":{"loss":"high"}})", "'values.loss'"},
      {R"({"type":"artifact"})", "'name': missing"},
      {R"({"type":"error","message":"x"})", "'code': missing"},
  };
  for (const Case& c : cases) {
    auto parsed = Parse(c.line);
    ASSERT_FALSE(parsed.ok()) << c.line;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(c.expected), absl::string_view::npos)
        << parsed.status() << " for " << c.line;
  }
}

// Regression input of fuzz/ (corpus/event_fuzzer/crash-deep-report): copying a "report" nested
// 50000 levels deep overflowed the stack. Such a line is now malformed; one at the limit is not.
TEST(EventTest, DeeplyNestedLinesAreMalformed) {
  // A report of `depth` nested arrays; the line's object is level 0.
  auto nested = [](int depth) {
    return std::string(R"({"type":"report","report":)") + std::string(depth, '[') +
           std::string(depth, ']') + "}";
  };
  for (int depth : {kMaxNestingDepth + 1, 50000, 200000}) {
    auto parsed = Parse(nested(depth));
    ASSERT_FALSE(parsed.ok()) << "depth " << depth;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find("deeper than 100 levels"), absl::string_view::npos)
        << parsed.status();
  }
  auto parsed = Parse(nested(kMaxNestingDepth));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->type, EventType::kReport);
  int depth = 0;
  const nlohmann::json* v = &parsed->report;
  while (v->is_array()) {
    ++depth;
    if (v->empty()) break;
    v = &v->front();
  }
  EXPECT_EQ(depth, kMaxNestingDepth);
  EXPECT_NE(Serialize(*parsed).find(R"("report":)" + std::string(kMaxNestingDepth, '[')),
            std::string::npos);
}

TEST(EventTest, UnknownFieldsAreIgnoredAndTrailingNewlineAccepted) {
  auto parsed = Parse(R"({"type":"log","level":"info","message":"hi","future":1})"
                      "\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->message, "hi");
}

TEST(EventTest, WriterWritesOneFlushedLinePerEvent) {
  std::string path = ::testing::TempDir() + "/events_writer_test";
  std::FILE* f = std::fopen(path.c_str(), "w+");
  ASSERT_NE(f, nullptr);
  EventWriter writer(f);
  writer.Write(Log("info", "one"));
  writer.Write(Log("info", "two"));
  std::rewind(f);
  char buffer[256];
  int lines = 0;
  while (std::fgets(buffer, sizeof(buffer), f) != nullptr) {
    auto parsed = Parse(buffer);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->message, lines == 0 ? "one" : "two");
    ++lines;
  }
  EXPECT_EQ(lines, 2);
  std::fclose(f);
}

}  // namespace
}  // namespace compress::events

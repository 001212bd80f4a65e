#include "worker/pipeline/prune/prune_plan.h"

#include "nlohmann/json.hpp"

namespace compress::pipeline {

nlohmann::json PrunePlan::ToJson() const {
  nlohmann::json steps_json = nlohmann::json::array();
  for (const PruneStepRecord& step : steps) {
    nlohmann::json removed = nlohmann::json::array();
    for (const GroupRemoval& removal : step.removed) {
      removed.push_back({{"group", removal.group},
                         {"name", groups.at(removal.group).name},
                         {"units", removal.units},
                         {"width_before", removal.width_before},
                         {"width_after", removal.width_after}});
    }
    steps_json.push_back({{"step", step.step},
                          {"goal", step.goal},
                          {"removed", std::move(removed)},
                          {"macs_after", step.macs_after},
                          {"params_after", step.params_after}});
  }
  nlohmann::json kept_json = nlohmann::json::array();
  for (const Group& group : groups) {
    kept_json.push_back({{"group", group.id},
                         {"name", group.name},
                         {"size", group.size},
                         {"kept", kept.at(group.id).size()},
                         {"units", kept.at(group.id)}});
  }
  return {{"version", 1},
          {"settings",
           {{"criterion", criterion},
            {"ranking", ranking},
            {"target_metric", target_metric},
            {"attention", attention},
            {"target_reduction", target_reduction},
            {"tolerance", tolerance},
            {"round_to", round_to}}},
          {"before",
           {{"macs", macs_before}, {"params", params_before}, {"config", config_before.ToJson()}}},
          {"after",
           {{"macs", macs_after},
            {"params", params_after},
            {"achieved_reduction", achieved_reduction},
            {"config", config_after.ToJson()}}},
          {"groups", graph.GroupsToJson(groups)},
          {"steps", std::move(steps_json)},
          {"kept", std::move(kept_json)}};
}

std::string PrunePlan::ToJsonString() const { return ToJson().dump(1); }

}  // namespace compress::pipeline

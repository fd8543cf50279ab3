// `tq status --controller tcp://H:P [--json]`: one row per partition, in
// creation order: its live samples, how many of them have each field, and
// how many each task has consumed.
#include "tools/tq/status.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/text_table.h"
#include "tq/client.h"

namespace tq::tools {
namespace {

// "name n/total" for each entry, two spaces apart; "-" for none.
template <typename Map>
std::string Counts(const Map& counts, size_t total) {
  std::string out;
  for (const auto& [name, n] : counts) {
    if (!out.empty()) out += "  ";
    out += name + " " + std::to_string(n) + "/" + std::to_string(total);
  }
  return out.empty() ? "-" : out;
}

void PrintTable(const std::string& controller, const std::vector<PartitionSummary>& partitions) {
  std::printf("controller %s: %zu partition%s\n", controller.c_str(), partitions.size(),
              partitions.size() == 1 ? "" : "s");
  if (partitions.empty()) return;
  tqds::TextTable t;
  t.head = {"partition", "samples", "produced (field n/samples)", "consumed (task n/samples)"};
  t.right = {false, true};
  for (const auto& p : partitions) {
    t.rows.push_back({p.partition_id, std::to_string(p.num_samples), Counts(p.produced, p.num_samples),
                      Counts(p.consumed, p.num_samples)});
  }
  std::fputs(t.Render().c_str(), stdout);
}

}  // namespace

int RunStatus(const StatusOptions& options) {
  TransferQueueClient client("tq-status", options.controller);
  auto partitions = client.partition_summaries();
  if (!partitions.ok()) {
    std::fprintf(stderr, "tq status: cannot ask the controller at %s: %s\n", options.controller.c_str(),
                 partitions.status().ToString().c_str());
    return 1;
  }
  if (options.json) {
    nlohmann::json doc = {{"controller", options.controller}, {"partitions", nlohmann::json::array()}};
    for (const auto& p : *partitions) {
      doc["partitions"].push_back({{"partition_id", p.partition_id},
                                   {"samples", p.num_samples},
                                   {"produced", p.produced},
                                   {"consumed", p.consumed}});
    }
    std::printf("%s\n", doc.dump(2).c_str());
  } else {
    PrintTable(options.controller, *partitions);
  }
  return 0;
}

}  // namespace tq::tools

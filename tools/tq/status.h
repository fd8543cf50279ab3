// `tq status`: the partitions of a live controller at a glance.
#pragma once

#include <string>

namespace tq::tools {

struct StatusOptions {
  std::string controller;  // tcp://host:port
  bool json = false;       // one JSON document instead of the table
};

// Prints the table (or JSON) on stdout; 0 on success, 1 with the error on
// stderr when the controller cannot be asked.
int RunStatus(const StatusOptions& options);

}  // namespace tq::tools

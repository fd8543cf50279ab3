// Runs a fuzz target over files, for builds without libFuzzer: every file
// named on the command line, and every file in each directory named, is
// passed once to LLVMFuzzerTestOneInput. A crash or sanitizer report fails
// the run; otherwise it prints how many inputs ran. Used by ctest (label
// "fuzz") over fuzz/corpus/<target>/.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  size_t ran = 0;
  auto run = [&](const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ++ran;
  };
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path p(argv[i]);
    if (std::filesystem::is_directory(p)) {
      for (const auto& e : std::filesystem::recursive_directory_iterator(p)) {
        if (e.is_regular_file()) run(e.path());
      }
    } else {
      run(p);
    }
  }
  // The empty input and a few degenerate ones, always.
  const uint8_t zeros[64] = {};
  LLVMFuzzerTestOneInput(zeros, 0);
  LLVMFuzzerTestOneInput(zeros, sizeof(zeros));
  std::printf("replayed %zu inputs\n", ran + 2);
  return ran > 0 ? 0 : 1;  // an empty corpus is a mistake
}

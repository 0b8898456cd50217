// Greedy generation from cdssm AOTInductor packages, without Python.
//
//   aoti_runner OP_LIBRARY PACKAGE_DIR MAX_NEW_TOKENS ID [ID ...]
//
// OP_LIBRARY: cdssm's op library (`python -c "from cdssm.ops._library import library_path;
// print(library_path())"`): the packages call the cdssm::* custom ops by name, so it is
// dlopen'ed first (it registers their schemas and CPU/CUDA kernels; it has no Python symbols).
// PACKAGE_DIR: the output of `cdssm export` (prefill.pt2 and decode.pt2):
//   prefill(input_ids (1, T) int64, cu_seqlens (N + 1,) int32) -> [logits (N, V), state...]
//   decode(tokens (N,) int64, state...)                       -> [logits (N, V), state...]
// The state tensors (the CD-SSM's conv window and fp32 scan state) pass from one program to the
// next unchanged in number and order. Runs on the device the packages were compiled for; prints
// the MAX_NEW_TOKENS greedy (argmax) token ids after the prompt ids, space-separated, on one line.

#include <dlfcn.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

namespace {

int usage(const char* program) {
  std::cerr << "usage: " << program << " OP_LIBRARY PACKAGE_DIR MAX_NEW_TOKENS ID [ID ...]\n"
            << "  greedy generation from the prefill.pt2 and decode.pt2 of `cdssm export`;\n"
            << "  prompt ids: at least 2 (the prefill program's shortest input)\n";
  return 2;
}

bool parse_int(const char* text, long long& value) {
  char* end = nullptr;
  value = std::strtoll(text, &end, 10);
  return end != text && *end == '\0';
}

c10::Device package_device(const std::string& package) {
  auto metadata = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(package, "model");
  auto found = metadata.find("AOTI_DEVICE_KEY");
  return c10::Device(found == metadata.end() ? std::string("cpu") : found->second);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) return usage(argv[0]);
  long long max_new_tokens = 0;
  if (!parse_int(argv[3], max_new_tokens) || max_new_tokens < 0) {
    std::cerr << "MAX_NEW_TOKENS: expected an integer >= 0, got '" << argv[3] << "'\n";
    return 2;
  }
  std::vector<int64_t> prompt;
  for (int i = 4; i < argc; ++i) {
    long long id = 0;
    if (!parse_int(argv[i], id) || id < 0) {
      std::cerr << "ID: expected a token id >= 0, got '" << argv[i] << "'\n";
      return 2;
    }
    prompt.push_back(id);
  }
  if (dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::cerr << "OP_LIBRARY: cannot load " << argv[1] << ": " << dlerror() << "\n";
    return 1;
  }
  const std::string dir = argv[2];
  try {
    const std::string prefill_path = dir + "/prefill.pt2", decode_path = dir + "/decode.pt2";
    const c10::Device device = package_device(prefill_path);
    torch::inductor::AOTIModelPackageLoader prefill(prefill_path), decode(decode_path);

    const auto T = static_cast<int64_t>(prompt.size());
    at::Tensor input_ids = at::tensor(prompt, at::kLong).view({1, T}).to(device);
    at::Tensor cu_seqlens = at::tensor(std::vector<int32_t>{0, static_cast<int32_t>(T)}, at::kInt).to(device);
    std::vector<at::Tensor> out = prefill.run({input_ids, cu_seqlens});
    for (long long step = 0; step < max_new_tokens; ++step) {
      at::Tensor token = out[0].argmax(-1);  // (1,) int64: the greedy next token
      std::cout << (step ? " " : "") << token.item<int64_t>() << std::flush;
      if (step + 1 == max_new_tokens) break;
      out[0] = token;  // decode inputs: the token, then the state outputs as they came
      out = decode.run(out);
    }
    std::cout << "\n";
  } catch (const std::exception& error) {
    std::cerr << "aoti_runner: " << error.what() << "\n";
    return 1;
  }
  return 0;
}

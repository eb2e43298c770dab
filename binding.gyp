{
  "targets": [
    {
      "target_name": "medv",
      "sources": ["native/medv.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "libraries": ["-lgcrypt"],
      "defines": ["NAPI_DISABLE_CPP_EXCEPTIONS", "NAPI_VERSION=8"],
      "cflags_cc": ["-O2", "-std=c++17", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-exceptions"],
      "conditions": [["OS!='linux'", {"sources!": ["native/medv.cc"]}]]
    }
  ]
}

// PyTorch checkpoints as torch.save writes them (torch/serialization.py,
// caffe2/serialize/inline_container.cc): since 1.6 an uncompressed zip holding <archive>/data.pkl,
// a pickle whose tensors name storages by persistent id, and each storage's raw bytes in
// <archive>/data/<key>, 64-byte aligned; before 1.6 a stream of pickles followed by the storages.
// We parse the zip ourselves (PKWARE APPNOTE 4.3, ZIP64 included) and run a restricted unpickler
// (pickletools opcodes, protocols 2-5) that builds no Python objects: it knows the handful of
// globals a state dict uses and refuses every other one, so a checkpoint cannot run code.
// Tensors alias the mapped file where dtype and alignment allow.
#pragma once
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/tensor.hpp"
#include "mapped_file.hpp"

namespace histograd::io {
namespace detail {

// ---------------------------------------------------------------- zip

struct ZipEntry {
  uint64_t data_offset = 0, size = 0;  // where the stored bytes sit in the file
};

// Little-endian fields at absolute offsets, each bounds-checked against the file.
class ZipBytes {
 public:
  explicit ZipBytes(const MappedFile& file) : file_(file) {}
  uint64_t u16(uint64_t at) const { return get(at, 2); }
  uint64_t u32(uint64_t at) const { return get(at, 4); }
  uint64_t u64(uint64_t at) const { return get(at, 8); }
  std::string text(uint64_t at, uint64_t n) const {
    need(at, n);
    return std::string(reinterpret_cast<const char*>(file_.data() + at), n);
  }
  void need(uint64_t at, uint64_t n) const {
    uint64_t end;
    HG_CHECK(!add_overflows(at, n, end) && end <= file_.size(), "pth", file_.name(),
             ": zip structure points past the end of the file (truncated or corrupt)");
  }
  [[noreturn]] void corrupt(const std::string& what) const { fail("pth", file_.name(), ": corrupt zip: ", what); }
  uint64_t size() const { return file_.size(); }
  const MappedFile& file() const { return file_; }

 private:
  uint64_t get(uint64_t at, int n) const {
    need(at, static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | file_.data()[at + static_cast<uint64_t>(i)];
    return v;
  }
  const MappedFile& file_;
};

// Where the central directory is, from the end-of-central-directory record (and its ZIP64
// twin when a field overflowed 16/32 bits).
struct ZipDirectory {
  uint64_t count = 0, offset = 0, size = 0;
};
inline ZipDirectory find_zip_directory(const ZipBytes& z) {
  if (z.size() < 22) z.corrupt("file too short for an end-of-directory record");
  uint64_t lowest = z.size() > 22 + 65535 ? z.size() - 22 - 65535 : 0;
  uint64_t eocd = z.size() - 22;
  while (z.u32(eocd) != 0x06054b50) {
    if (eocd == lowest) z.corrupt("no end-of-central-directory record");
    --eocd;
  }
  ZipDirectory d{z.u16(eocd + 10), z.u32(eocd + 16), z.u32(eocd + 12)};
  if (d.count == 0xFFFF || d.offset == 0xFFFFFFFF || d.size == 0xFFFFFFFF) {
    if (eocd < 20 || z.u32(eocd - 20) != 0x07064b50) z.corrupt("ZIP64 locator missing");
    uint64_t record = z.u64(eocd - 20 + 8);
    if (z.u32(record) != 0x06064b50) z.corrupt("ZIP64 end-of-directory record missing");
    d = {z.u64(record + 32), z.u64(record + 48), z.u64(record + 40)};
  }
  uint64_t end;
  if (add_overflows(d.offset, d.size, end) || end > z.size()) z.corrupt("central directory lies outside the file");
  if (d.count > d.size / 46) z.corrupt("central directory too small for its " + std::to_string(d.count) + " entries");
  return d;
}

// One central-directory record at `at`: fills `entry` and returns the next record's offset.
inline uint64_t read_zip_record(const ZipBytes& z, uint64_t at, std::string& name, ZipEntry& entry) {
  if (z.u32(at) != 0x02014b50) z.corrupt("bad central directory record at byte " + std::to_string(at));
  uint64_t flags = z.u16(at + 8), method = z.u16(at + 10);
  uint64_t packed = z.u32(at + 20), size = z.u32(at + 24), local = z.u32(at + 42);
  uint64_t name_len = z.u16(at + 28), extra_len = z.u16(at + 30), comment_len = z.u16(at + 32);
  name = z.text(at + 46, name_len);
  // ZIP64 extra field (id 1): 64-bit values for exactly the fields that hold 0xFFFFFFFF.
  for (uint64_t x = at + 46 + name_len, x_end = x + extra_len; x + 4 <= x_end;) {
    uint64_t id = z.u16(x), len = z.u16(x + 2), field = x + 4;
    if (field + len > x_end) z.corrupt("extra field of '" + name + "' overruns its record");
    if (id == 1) {
      for (uint64_t* v : {&size, &packed, &local}) {
        if (*v != 0xFFFFFFFF) continue;
        if (field + 8 > x + 4 + len) z.corrupt("short ZIP64 field in '" + name + "'");
        *v = z.u64(field);
        field += 8;
      }
    }
    x += 4 + len;
  }
  if (flags & 1) fail("pth", z.file().name(), ": zip entry '", name, "' is encrypted");
  if (method != 0 || packed != size)
    fail("pth", z.file().name(), ": zip entry '", name, "' is compressed (method ", method,
         "); torch.save stores entries uncompressed: re-save the checkpoint with torch.save");
  if (z.u32(local) != 0x04034b50) z.corrupt("no local header for '" + name + "'");
  entry.data_offset = local + 30 + z.u16(local + 26) + z.u16(local + 28);
  entry.size = size;
  z.need(entry.data_offset, size);
  return at + 46 + name_len + extra_len + comment_len;
}

inline std::map<std::string, ZipEntry> read_zip(const MappedFile& file) {
  ZipBytes z(file);
  ZipDirectory dir = find_zip_directory(z);
  std::map<std::string, ZipEntry> entries;
  uint64_t at = dir.offset;
  for (uint64_t i = 0; i < dir.count; ++i) {
    std::string name;
    ZipEntry entry;
    at = read_zip_record(z, at, name, entry);
    if (at > dir.offset + dir.size) z.corrupt("central directory overruns its stated size");
    if (!entries.emplace(name, entry).second) z.corrupt("entry '" + name + "' appears twice");
  }
  return entries;
}

// ---------------------------------------------------------------- pickle

// What a persistent id names: one storage of the archive.
struct StorageRef {
  std::string key;
  StoredType type = StoredType::F32;
  int64_t numel = 0;
};
// What _rebuild_tensor_v2 was asked to build.
struct TensorRecord {
  const StorageRef* storage = nullptr;
  int64_t offset = 0;
  Shape sizes, strides;
};
// The callables a state dict pickle may name.
enum class Callable { OrderedDict, RebuildTensor, RebuildParameter, StorageType, Inert };

// Values live in the unpickler's arena and point at each other by raw pointer, so a hostile
// pickle's cycles or deep nesting cost neither leaks nor recursive destruction.
struct PickleValue {
  enum Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Global, Storage, Tensor, Opaque } kind = None;
  int64_t integer = 0;                // Bool, Int
  std::string text;                   // Str, Bytes; Global: "module.name"
  std::vector<PickleValue*> items;    // Tuple, List; Dict: key0, value0, key1, value1, ...
  Callable callable = Callable::Inert;  // Global
  StoredType storage_type = StoredType::F32;  // Global naming a storage class
  StorageRef storage;                 // Storage
  TensorRecord tensor;                // Tensor
};

// Maps an allowed "module.name" to what it does; nullopt for everything else.
inline std::optional<PickleValue> allowed_global(const std::string& module, const std::string& name) {
  PickleValue g;
  g.kind = PickleValue::Global;
  g.text = module + "." + name;
  static const std::map<std::string, StoredType> storages = {
      {"FloatStorage", StoredType::F32}, {"HalfStorage", StoredType::F16},   {"BFloat16Storage", StoredType::BF16},
      {"DoubleStorage", StoredType::F64}, {"LongStorage", StoredType::I64},  {"IntStorage", StoredType::I32},
      {"ShortStorage", StoredType::I16}, {"CharStorage", StoredType::I8},    {"ByteStorage", StoredType::U8},
      {"BoolStorage", StoredType::Bool}};
  static const std::set<std::string> inert = {  // containers seen in training checkpoints; never built
      "argparse.Namespace", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
      "_codecs.encode", "torch.float32", "torch.float16", "torch.bfloat16", "torch.float64", "torch.int64",
      "torch.int32", "torch.int16", "torch.int8", "torch.uint8", "torch.bool"};
  if (g.text == "collections.OrderedDict") g.callable = Callable::OrderedDict;
  else if (g.text == "torch._utils._rebuild_tensor_v2") g.callable = Callable::RebuildTensor;
  else if (g.text == "torch._utils._rebuild_parameter" || g.text == "torch._utils._rebuild_parameter_with_state")
    g.callable = Callable::RebuildParameter;
  else if (module == "torch" && storages.count(name)) {
    g.callable = Callable::StorageType;
    g.storage_type = storages.at(name);
  } else if (inert.count(g.text)) g.callable = Callable::Inert;
  else return std::nullopt;
  return g;
}

class Unpickler {
 public:
  Unpickler(std::span<const unsigned char> bytes, const std::string& file) : bytes_(bytes), file_(file) {}

  // Runs the pickle to STOP and returns the object it built (owned by this Unpickler).
  PickleValue* load() {
    while (true) {
      if (pos_ >= bytes_.size()) error("ends without STOP");
      op_at_ = pos_;
      unsigned char op = bytes_[pos_++];
      if (op == '.') return pop();
      step(op);
    }
  }
  // Bytes read up to and including STOP: the legacy format puts several pickles back to back.
  size_t consumed() const { return pos_; }
  size_t value_count() const { return arena_.size(); }

 private:
  void step(unsigned char op);
  void reduce(PickleValue* callable, PickleValue* args);
  PickleValue* persistent_load(PickleValue* pid);

  PickleValue* make(PickleValue::Kind kind) {
    arena_.push_back(std::make_unique<PickleValue>());
    arena_.back()->kind = kind;
    return arena_.back().get();
  }
  PickleValue* make_int(int64_t v, PickleValue::Kind kind = PickleValue::Int) {
    PickleValue* p = make(kind);
    p->integer = v;
    return p;
  }
  PickleValue* make_text(PickleValue::Kind kind, uint64_t n) {
    PickleValue* p = make(kind);
    const unsigned char* b = take(n);
    p->text.assign(reinterpret_cast<const char*>(b), n);
    return p;
  }
  const unsigned char* take(uint64_t n) {
    if (n > bytes_.size() - pos_) error("truncated (an argument runs past the end)");
    const unsigned char* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint64_t unsigned_le(int n) {
    const unsigned char* b = take(static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }
  std::string line() {
    size_t start = pos_;
    while (pos_ < bytes_.size() && bytes_[pos_] != '\n') ++pos_;
    if (pos_ >= bytes_.size()) error("truncated GLOBAL");
    return std::string(reinterpret_cast<const char*>(bytes_.data() + start), pos_++ - start);
  }
  void push(PickleValue* v) { stack_.push_back(v); }
  // The stack above the innermost MARK is all an opcode may consume.
  PickleValue* pop() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) error("stack underflow");
    PickleValue* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PickleValue* top() {
    PickleValue* v = pop();
    push(v);
    return v;
  }
  std::vector<PickleValue*> pop_mark() {
    if (marks_.empty()) error("no MARK to pop to");
    size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PickleValue*> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  PickleValue* tuple(std::vector<PickleValue*> items) {
    PickleValue* t = make(PickleValue::Tuple);
    t->items = std::move(items);
    return t;
  }
  void set_items(PickleValue* dict, const std::vector<PickleValue*>& pairs) {
    if (dict->kind != PickleValue::Dict) error("SETITEM(S) on something that is not a dict");
    if (pairs.size() % 2) error("SETITEMS with an odd number of items");
    // Appended, not looked up: a repeated key (which no real pickle holds) is refused when the
    // keys are joined, and lookups would make a hostile pickle quadratic.
    dict->items.insert(dict->items.end(), pairs.begin(), pairs.end());
  }
  void append(PickleValue* list, const std::vector<PickleValue*>& items) {
    if (list->kind != PickleValue::List) error("APPEND(S) on something that is not a list");
    list->items.insert(list->items.end(), items.begin(), items.end());
  }
  void memo_put(uint64_t index) { memo_[index] = top(); }
  PickleValue* memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) error("memo index " + std::to_string(index) + " was never stored");
    return it->second;
  }
  [[noreturn]] void error(const std::string& what) const {
    fail("pth", file_, ": bad pickle at byte ", op_at_, ": ", what);
  }

  std::span<const unsigned char> bytes_;
  const std::string& file_;
  size_t pos_ = 0, op_at_ = 0;
  std::vector<std::unique_ptr<PickleValue>> arena_;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue*> memo_;
};

inline void Unpickler::step(unsigned char op) {
  switch (op) {
    case 0x80: take(1); break;     // PROTO
    case 0x95: take(8); break;     // FRAME: we hold the whole pickle anyway
    case '(': marks_.push_back(stack_.size()); break;
    case '0': pop(); break;        // POP
    case '1': pop_mark(); break;   // POP_MARK
    case '2': push(top()); break;  // DUP
    case 'N': push(make(PickleValue::None)); break;
    case 0x88: push(make_int(1, PickleValue::Bool)); break;
    case 0x89: push(make_int(0, PickleValue::Bool)); break;
    case 'J': push(make_int(static_cast<int32_t>(static_cast<uint32_t>(unsigned_le(4))))); break;
    case 'K': push(make_int(static_cast<int64_t>(unsigned_le(1)))); break;
    case 'M': push(make_int(static_cast<int64_t>(unsigned_le(2)))); break;
    case 0x8a: case 0x8b: {  // LONG1, LONG4: little-endian two's complement
      uint64_t n = unsigned_le(op == 0x8a ? 1 : 4);
      if (n > 8) { take(n); push(make(PickleValue::Opaque)); break; }  // beyond int64: never a size
      uint64_t v = n ? unsigned_le(static_cast<int>(n)) : 0;
      if (n && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);
      push(make_int(static_cast<int64_t>(v)));
      break;
    }
    case 'G': {  // BINFLOAT, big-endian
      const unsigned char* b = take(8);
      uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | b[i];
      PickleValue* f = make(PickleValue::Float);
      f->integer = static_cast<int64_t>(bits);
      push(f);
      break;
    }
    case 'X': push(make_text(PickleValue::Str, unsigned_le(4))); break;
    case 0x8c: push(make_text(PickleValue::Str, unsigned_le(1))); break;
    case 0x8d: push(make_text(PickleValue::Str, unsigned_le(8))); break;
    case 'B': push(make_text(PickleValue::Bytes, unsigned_le(4))); break;
    case 'C': push(make_text(PickleValue::Bytes, unsigned_le(1))); break;
    case 0x8e: push(make_text(PickleValue::Bytes, unsigned_le(8))); break;
    case '}': push(make(PickleValue::Dict)); break;
    case ']': push(make(PickleValue::List)); break;
    case ')': push(tuple({})); break;
    case 't': push(tuple(pop_mark())); break;
    case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
      std::vector<PickleValue*> items(static_cast<size_t>(op - 0x84));
      for (size_t i = items.size(); i-- > 0;) items[i] = pop();
      push(tuple(std::move(items)));
      break;
    }
    case 's': {
      PickleValue* value = pop();
      PickleValue* key = pop();
      set_items(top(), {key, value});
      break;
    }
    case 'u': { auto pairs = pop_mark(); set_items(top(), pairs); break; }
    case 'a': { PickleValue* v = pop(); append(top(), {v}); break; }
    case 'e': { auto items = pop_mark(); append(top(), items); break; }
    case 'q': memo_put(unsigned_le(1)); break;
    case 'r': memo_put(unsigned_le(4)); break;
    case 0x94: memo_put(memo_.size()); break;
    case 'h': push(memo_get(unsigned_le(1))); break;
    case 'j': push(memo_get(unsigned_le(4))); break;
    case 'c': {
      std::string module = line();
      std::string name = line();
      auto g = allowed_global(module, name);
      if (!g) fail("pth", file_, ": pickle asks for ", module, ".", name, ", which a state dict does not need");
      push(make(PickleValue::Global));
      *stack_.back() = *g;
      break;
    }
    case 0x93: {  // STACK_GLOBAL
      PickleValue* name = pop();
      PickleValue* module = pop();
      if (name->kind != PickleValue::Str || module->kind != PickleValue::Str) error("STACK_GLOBAL needs two strings");
      auto g = allowed_global(module->text, name->text);
      if (!g) fail("pth", file_, ": pickle asks for ", module->text, ".", name->text, ", which a state dict does not need");
      push(make(PickleValue::Global));
      *stack_.back() = *g;
      break;
    }
    case 'Q': { PickleValue* pid = pop(); push(persistent_load(pid)); break; }
    case 'R': { PickleValue* args = pop(); PickleValue* callable = pop(); reduce(callable, args); break; }
    case 0x81: { PickleValue* args = pop(); PickleValue* cls = pop(); reduce(cls, args); break; }  // NEWOBJ
    case 0x92: {  // NEWOBJ_EX: keyword arguments never matter to the classes we allow
      pop();
      PickleValue* args = pop();
      PickleValue* cls = pop();
      reduce(cls, args);
      break;
    }
    case 'b': pop(); top(); break;  // BUILD: object state (Namespace fields, OrderedDict._metadata) is not needed
    default: {
      const char* hex = "0123456789abcdef";
      error(std::string("opcode 0x") + hex[op >> 4] + hex[op & 15] + " is not one a checkpoint uses");
    }
  }
}

// ('storage', torch.<Type>Storage, key, location, numel): one storage of the archive. The legacy
// format appends view metadata, None unless the storage was a view of another (pre-1.0 torch).
inline PickleValue* Unpickler::persistent_load(PickleValue* pid) {
  if (pid->kind != PickleValue::Tuple || pid->items.size() < 5 || pid->items.size() > 6 ||
      pid->items[0]->kind != PickleValue::Str || pid->items[0]->text != "storage")
    error("persistent id is not ('storage', type, key, location, numel)");
  const auto& f = pid->items;
  if (f[1]->kind != PickleValue::Global || f[1]->callable != Callable::StorageType) error("storage type is not a torch storage class");
  if (f[2]->kind != PickleValue::Str) error("storage key is not a string");
  if (f[4]->kind != PickleValue::Int || f[4]->integer < 0) error("storage size is not a non-negative integer");
  if (f.size() == 6 && f[5]->kind != PickleValue::None) error("storage views of the legacy format are not supported");
  PickleValue* s = make(PickleValue::Storage);
  s->storage = {f[2]->text, f[1]->storage_type, f[4]->integer};
  return s;
}

inline void Unpickler::reduce(PickleValue* callable, PickleValue* args) {
  if (callable->kind != PickleValue::Global) error("REDUCE/NEWOBJ on something that is not a class or function");
  if (args->kind != PickleValue::Tuple) error("REDUCE/NEWOBJ arguments are not a tuple");
  const auto& a = args->items;
  auto ints = [&](PickleValue* t, Shape& out) {
    if (t->kind != PickleValue::Tuple) error("tensor size/stride is not a tuple");
    for (PickleValue* v : t->items) {
      if (v->kind != PickleValue::Int) error("tensor size/stride holds a non-integer");
      out.push_back(v->integer);
    }
  };
  switch (callable->callable) {
    case Callable::OrderedDict:
      if (!a.empty()) error("OrderedDict called with arguments");
      push(make(PickleValue::Dict));
      return;
    case Callable::RebuildTensor: {  // (storage, storage_offset, size, stride, requires_grad, hooks[, metadata])
      if (a.size() < 4 || a[0]->kind != PickleValue::Storage || a[1]->kind != PickleValue::Int)
        error("_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)");
      PickleValue* t = make(PickleValue::Tensor);
      t->tensor.storage = &a[0]->storage;
      t->tensor.offset = a[1]->integer;
      ints(a[2], t->tensor.sizes);
      ints(a[3], t->tensor.strides);
      if (t->tensor.sizes.size() != t->tensor.strides.size()) error("tensor size and stride differ in length");
      push(t);
      return;
    }
    case Callable::RebuildParameter:  // (data, requires_grad, hooks[, state]): the data is the tensor
      if (a.empty() || a[0]->kind != PickleValue::Tensor) error("_rebuild_parameter without a tensor");
      push(a[0]);
      return;
    case Callable::StorageType: error("storage classes are only for persistent ids");
    case Callable::Inert: push(make(PickleValue::Opaque)); return;
  }
}

// ---------------------------------------------------------------- tensors

// Nested dicts (and lists) become one level with '.'-joined keys, as in a module's state dict;
// everything that is not a tensor is dropped. `budget` bounds the visits: containers shared
// by memo can form a DAG whose paths double at every level, which no real checkpoint does.
inline void flatten_pickle(const PickleValue* v, const std::string& prefix, int depth, const std::string& file,
                           std::vector<std::pair<std::string, const TensorRecord*>>& out, uint64_t& budget) {
  if (depth > 64) fail("pth", file, ": containers nested deeper than 64 levels (or a cycle) at '", prefix, "'");
  if (budget-- == 0) fail("pth", file, ": containers are shared so often that flattening them would not end");
  auto child = [&](const PickleValue* key, const PickleValue* value) {
    std::string name;
    if (key->kind == PickleValue::Str) name = key->text;
    else if (key->kind == PickleValue::Int) name = std::to_string(key->integer);
    else return;  // tuple or float keys: never part of a state dict
    flatten_pickle(value, prefix.empty() ? name : prefix + "." + name, depth + 1, file, out, budget);
  };
  if (v->kind == PickleValue::Tensor) {
    out.emplace_back(prefix, &v->tensor);
  } else if (v->kind == PickleValue::Dict) {
    for (size_t i = 0; i + 1 < v->items.size(); i += 2) child(v->items[i], v->items[i + 1]);
  } else if (v->kind == PickleValue::List || v->kind == PickleValue::Tuple) {
    PickleValue index;
    index.kind = PickleValue::Int;
    for (size_t i = 0; i < v->items.size(); ++i) {
      index.integer = static_cast<int64_t>(i);
      child(&index, v->items[i]);
    }
  }
}
// The visit budget for a pickle of `values` values: a state dict visits each about once.
inline std::vector<std::pair<std::string, const TensorRecord*>> flatten_pickle(const PickleValue* root,
                                                                              size_t values, const std::string& file) {
  std::vector<std::pair<std::string, const TensorRecord*>> out;
  uint64_t budget = 8 * static_cast<uint64_t>(values) + 1024;
  flatten_pickle(root, "", 0, file, out, budget);
  return out;
}

// Checks that a tensor's every element lies inside its storage: sizes and strides non-negative,
// offset + sum((size-1)*stride) < numel, all without overflow.
inline void check_tensor_bounds(const TensorRecord& t, int64_t storage_numel, const std::string& file,
                                const std::string& name) {
  uint64_t last = static_cast<uint64_t>(t.offset), numel = 1;
  bool ok = t.offset >= 0;
  for (size_t i = 0; ok && i < t.sizes.size(); ++i) {
    ok = t.sizes[i] >= 0 && t.strides[i] >= 0;
    uint64_t step = 0;
    if (ok && t.sizes[i] > 0)
      ok = !mul_overflows(static_cast<uint64_t>(t.sizes[i] - 1), static_cast<uint64_t>(t.strides[i]), step) &&
           !add_overflows(last, step, last);
    if (ok) ok = !mul_overflows(numel, static_cast<uint64_t>(t.sizes[i]), numel) && numel <= uint64_t(INT64_MAX);
  }
  HG_CHECK(ok && (numel == 0 || last < static_cast<uint64_t>(storage_numel)), "pth", file, ": tensor '", name,
           "' (offset ", t.offset, ", size ", to_string(t.sizes), ", stride ", to_string(t.strides),
           ") reaches outside its storage of ", storage_numel, " elements");
}

// Tensors over the storages (key -> byte range in the file). Storages shared by several tensors
// are made once, so views of one storage still share memory as they did in torch.
template <class T>
std::map<std::string, Tensor<T>> build_tensors(const std::shared_ptr<MappedFile>& file,
                                               const std::vector<std::pair<std::string, const TensorRecord*>>& records,
                                               const std::map<std::string, ZipEntry>& storage_bytes) {
  const std::string& path = file->name();
  std::map<std::string, Tensor<T>> out;
  std::map<std::string, std::pair<StoredType, std::shared_ptr<Storage<T>>>> storages;
  for (const auto& [name, record] : records) {
    const StorageRef& ref = *record->storage;
    auto data = storage_bytes.find(ref.key);
    HG_CHECK(data != storage_bytes.end(), "pth", path, ": tensor '", name, "' uses storage '", ref.key,
             "', which the archive lacks");
    uint64_t bytes = 0;
    HG_CHECK(!mul_overflows(static_cast<uint64_t>(ref.numel), stored_size(ref.type), bytes) &&
                 bytes <= data->second.size,
             "pth", path, ": storage '", ref.key, "' claims ", ref.numel, " ", stored_name(ref.type),
             " elements but holds ", data->second.size, " bytes");
    auto [it, fresh] = storages.try_emplace(ref.key);
    if (fresh) it->second = {ref.type, storage_over<T>(file, data->second.data_offset, ref.type, ref.numel, "pth", name)};
    HG_CHECK(it->second.first == ref.type, "pth", path, ": storage '", ref.key, "' is read as two dtypes");
    check_tensor_bounds(*record, it->second.second->size(), path, name);
    HG_CHECK(out.emplace(name, Tensor<T>(it->second.second, record->sizes, record->strides, record->offset)).second,
             "pth", path, ": key '", name, "' appears twice once nested dicts are joined");
  }
  return out;
}

template <class T>
std::map<std::string, Tensor<T>> read_zip_checkpoint(const std::shared_ptr<MappedFile>& file) {
  const std::string& path = file->name();
  const unsigned char* b = file->data();
  auto entries = read_zip(*file);
  // The archive folder is named by the saver ("archive" in recent torch, the file stem before).
  std::string prefix;
  for (const auto& [name, entry] : entries) {
    auto slash = name.find('/');
    if (slash != std::string::npos && name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      if (!prefix.empty()) fail("pth", path, ": more than one data.pkl in the archive");
      prefix = name.substr(0, slash + 1);
    }
  }
  HG_CHECK(!prefix.empty(), "pth", path, ": no <archive>/data.pkl entry: not a torch.save checkpoint");
  auto order = entries.find(prefix + "byteorder");
  if (order != entries.end()) {
    std::string text(reinterpret_cast<const char*>(b + order->second.data_offset), order->second.size);
    HG_CHECK(text == "little", "pth", path, ": storages are stored '", text, "'-endian; only little-endian is read");
  }
  std::map<std::string, ZipEntry> storage_bytes;
  const std::string data_folder = prefix + "data/";
  for (const auto& [name, entry] : entries)
    if (name.compare(0, data_folder.size(), data_folder) == 0) storage_bytes.emplace(name.substr(data_folder.size()), entry);
  const ZipEntry& pkl = entries.at(prefix + "data.pkl");
  Unpickler unpickler(std::span<const unsigned char>(b + pkl.data_offset, pkl.size), path);
  PickleValue* root = unpickler.load();
  auto records = flatten_pickle(root, unpickler.value_count(), path);
  return build_tensors<T>(file, records, storage_bytes);
}

// The pre-1.6 format (torch/serialization.py _legacy_save): pickles of the magic number, the
// protocol version (1001) and sys_info, then the object, then the sorted storage keys; then each
// storage as an int64 element count followed by its bytes, in key order.
template <class T>
std::map<std::string, Tensor<T>> read_legacy_checkpoint(const std::shared_ptr<MappedFile>& file) {
  const std::string& path = file->name();
  static const unsigned char magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                        0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};
  HG_CHECK(file->size() >= sizeof magic && std::memcmp(file->data(), magic, sizeof magic) == 0, "pth", path,
           ": a pickle without torch's magic number: not a torch.save checkpoint");
  std::vector<std::unique_ptr<Unpickler>> pickles;  // values of the object pickle must outlive the later ones
  size_t pos = sizeof magic;
  auto next = [&]() {
    pickles.push_back(std::make_unique<Unpickler>(
        std::span<const unsigned char>(file->data() + pos, file->size() - pos), path));
    PickleValue* v = pickles.back()->load();
    pos += pickles.back()->consumed();
    return v;
  };
  PickleValue* version = next();
  HG_CHECK(version->kind == PickleValue::Int && version->integer == 1001, "pth", path,
           ": legacy checkpoint of an unknown protocol version");
  PickleValue* info = next();
  for (size_t i = 0; info->kind == PickleValue::Dict && i + 1 < info->items.size(); i += 2)
    if (info->items[i]->kind == PickleValue::Str && info->items[i]->text == "little_endian")
      HG_CHECK(info->items[i + 1]->integer == 1, "pth", path, ": big-endian legacy checkpoint; only little-endian is read");
  PickleValue* object = next();
  auto records = flatten_pickle(object, pickles.back()->value_count(), path);
  PickleValue* keys = next();
  HG_CHECK(keys->kind == PickleValue::List, "pth", path, ": legacy checkpoint lacks its list of storage keys");
  std::map<std::string, StoredType> types;  // element widths come from the object pickle
  for (const auto& [name, record] : records) types.emplace(record->storage->key, record->storage->type);
  std::map<std::string, ZipEntry> storage_bytes;
  for (const PickleValue* key : keys->items) {
    HG_CHECK(key->kind == PickleValue::Str && types.count(key->text), "pth", path,
             ": legacy storage list names a storage no tensor uses");
    HG_CHECK(file->size() - pos >= 8, "pth", path, ": truncated before storage '", key->text, "'");
    uint64_t numel = 0, bytes = 0;
    for (int i = 7; i >= 0; --i) numel = (numel << 8) | file->data()[pos + static_cast<size_t>(i)];
    pos += 8;
    HG_CHECK(!mul_overflows(numel, stored_size(types.at(key->text)), bytes) && bytes <= file->size() - pos, "pth",
             path, ": storage '", key->text, "' of ", numel, " elements runs past the end of the file");
    storage_bytes[key->text] = {pos, bytes};
    pos += bytes;
  }
  return build_tensors<T>(file, records, storage_bytes);
}

template <class T>
std::map<std::string, Tensor<T>> read_pth_file(const std::shared_ptr<MappedFile>& file) {
  const unsigned char* b = file->data();
  if (file->size() >= 2 && b[0] == 0x80 && b[1] <= 5) return read_legacy_checkpoint<T>(file);
  if (file->size() < 4 || b[0] != 'P' || b[1] != 'K' || b[2] != 3 || b[3] != 4)
    fail("pth", file->name(), ": not a PyTorch checkpoint (neither a zip nor a pickle)");
  return read_zip_checkpoint<T>(file);
}

}  // namespace detail

// Every tensor of a torch.save checkpoint as T, keyed like a state dict ("teacher.backbone.x").
template <class T>
std::map<std::string, Tensor<T>> read_pth(const std::string& path) {
  return detail::read_pth_file<T>(MappedFile::open(path, "pth"));
}
// The same from bytes in memory (copied); `name` stands for the path in error messages.
template <class T>
std::map<std::string, Tensor<T>> read_pth(std::span<const unsigned char> bytes, const std::string& name) {
  return detail::read_pth_file<T>(MappedFile::copy_of(bytes, name));
}

}  // namespace histograd::io

// HDF5 files of the slide pipelines: a small RAII writer/reader over the HDF5 C API (1.10), and the
// coordinate and feature files of CLAM (wsi_utils.save_hdf5, extract_features_fp.py) and TRIDENT
// (WSIPatcher.to_h5, features_<encoder>/<name>.h5) as ../shared/docs/WSI.md §A1-A2 describe them.
// We write TRIDENT's layout plus the two attributes CLAM's readers need; we read both layouts.
// Writers go to "<path>.tmp" and rename when complete, so a crash never leaves a partial file.
// Not thread-safe: Debian's HDF5 is built without its global lock; call from one thread.
#pragma once
#include <hdf5.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../core/error.hpp"

namespace histograd::wsi {

// An attribute value as the two tools write them (h5py: ints -> int64, floats -> float64, str ->
// variable-length UTF-8, tuples -> 1-D arrays).
using Attribute = std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>>;

namespace detail {

// Owns one hid_t and closes it with the matching H5*close.
class Hid {
 public:
  Hid() = default;
  Hid(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Hid(Hid&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  Hid& operator=(Hid&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      close_ = o.close_;
    }
    return *this;
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  ~Hid() { reset(); }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = H5I_INVALID_HID;
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  herr_t (*close_)(hid_t) = nullptr;
};

// HDF5 prints its error stack to stderr by default; we turn that into our own messages instead.
// The innermost entry of the stack is the most specific description ("unable to open file").
inline std::string h5_error_message() {
  std::string message;
  auto walk = [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
    auto* out = static_cast<std::string*>(data);
    if (e && e->desc && *e->desc) *out = e->desc;  // the last visited is the innermost
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk, &message);
  H5Eclear2(H5E_DEFAULT);
  return message.empty() ? std::string("HDF5 error") : message;
}

inline void silence_h5_errors() {
  static const bool done = [] {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

template <class T>
hid_t native_type() {
  if constexpr (std::is_same_v<T, float>) return H5T_NATIVE_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return H5T_NATIVE_DOUBLE;
  else if constexpr (std::is_same_v<T, int64_t>) return H5T_NATIVE_INT64;
  else if constexpr (std::is_same_v<T, int32_t>) return H5T_NATIVE_INT32;
  else static_assert(sizeof(T) == 0, "HDF5 datasets of float, double, int32 or int64");
}
// The on-disk type we write for T: little-endian, as numpy/h5py write on every machine we run on.
template <class T>
hid_t file_type() {
  if constexpr (std::is_same_v<T, float>) return H5T_IEEE_F32LE;
  else if constexpr (std::is_same_v<T, double>) return H5T_IEEE_F64LE;
  else if constexpr (std::is_same_v<T, int64_t>) return H5T_STD_I64LE;
  else if constexpr (std::is_same_v<T, int32_t>) return H5T_STD_I32LE;
  else static_assert(sizeof(T) == 0, "HDF5 datasets of float, double, int32 or int64");
}

// A variable-length UTF-8 string type, what h5py writes for a Python str.
inline Hid vlen_string_type() {
  Hid t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  return t;
}

}  // namespace detail

// Writes datasets of rows (N, cols) that grow as rows are appended (chunked, maxshape (None, cols),
// as CLAM's save_hdf5 makes them) and attributes, to "<path>.tmp"; commit() closes the file and
// renames it to `path`. Destroyed without commit(): the temporary file is removed.
class H5Writer {
 public:
  explicit H5Writer(std::string path) : path_(std::move(path)), temp_(path_ + ".tmp") {
    detail::silence_h5_errors();
    file_ = detail::Hid(H5Fcreate(temp_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    HG_CHECK(file_.valid(), "H5Writer", "cannot create '", temp_, "': ", detail::h5_error_message());
  }
  H5Writer(const H5Writer&) = delete;
  H5Writer& operator=(const H5Writer&) = delete;
  ~H5Writer() {
    if (committed_) return;
    datasets_.clear();
    file_.reset();
    std::error_code ec;
    std::filesystem::remove(temp_, ec);
  }
  const std::string& path() const { return path_; }

  // An empty (0, cols) dataset of T, extendable along rows, chunked by chunk_rows rows.
  template <class T>
  void create_dataset(const std::string& name, int64_t cols, int64_t chunk_rows = 256) {
    HG_CHECK(cols > 0 && chunk_rows > 0, "H5Writer", path_, ": dataset '", name,
             "' needs positive columns and chunk rows, got ", cols, " and ", chunk_rows);
    HG_CHECK(!datasets_.count(name), "H5Writer", path_, ": dataset '", name, "' created twice");
    hsize_t dims[2] = {0, hsize_t(cols)}, maxdims[2] = {H5S_UNLIMITED, hsize_t(cols)},
            chunk[2] = {hsize_t(chunk_rows), hsize_t(cols)};
    detail::Hid space(H5Screate_simple(2, dims, maxdims), H5Sclose);
    detail::Hid plist(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    H5Pset_chunk(plist.get(), 2, chunk);
    detail::Hid set(H5Dcreate2(file_.get(), name.c_str(), detail::file_type<T>(), space.get(), H5P_DEFAULT, plist.get(),
                               H5P_DEFAULT),
                    H5Dclose);
    HG_CHECK(set.valid(), "H5Writer", path_, ": cannot create dataset '", name, "': ", detail::h5_error_message());
    datasets_.emplace(name, Dataset{std::move(set), cols, 0, detail::native_type<T>()});
  }

  // Appends `rows` rows of cols values (row-major) to a dataset made by create_dataset<T>.
  template <class T>
  void append(const std::string& name, const T* data, int64_t rows) {
    auto it = datasets_.find(name);
    HG_CHECK(it != datasets_.end(), "H5Writer", path_, ": append to dataset '", name, "' before create_dataset");
    Dataset& d = it->second;
    HG_CHECK(H5Tequal(d.mem_type, detail::native_type<T>()) > 0, "H5Writer", path_, ": dataset '", name,
             "' appended with a different element type than it was created with");
    HG_CHECK(rows >= 0, "H5Writer", path_, ": negative row count ", rows);
    if (rows == 0) return;
    hsize_t new_dims[2] = {hsize_t(d.rows + rows), hsize_t(d.cols)};
    HG_CHECK(H5Dset_extent(d.id.get(), new_dims) >= 0, "H5Writer", path_, ": cannot extend '", name,
             "': ", detail::h5_error_message());
    detail::Hid file_space(H5Dget_space(d.id.get()), H5Sclose);
    hsize_t start[2] = {hsize_t(d.rows), 0}, count[2] = {hsize_t(rows), hsize_t(d.cols)};
    H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
    detail::Hid mem_space(H5Screate_simple(2, count, nullptr), H5Sclose);
    HG_CHECK(H5Dwrite(d.id.get(), d.mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, data) >= 0, "H5Writer",
             path_, ": cannot write '", name, "': ", detail::h5_error_message());
    d.rows += rows;
  }

  template <class T>
  void write_dataset(const std::string& name, const T* data, int64_t rows, int64_t cols, int64_t chunk_rows = 256) {
    create_dataset<T>(name, cols, chunk_rows);
    append<T>(name, data, rows);
  }

  // An attribute on a dataset written by this writer, or on the file's root group ("/").
  void set_attribute(const std::string& object, const std::string& name, const Attribute& value) {
    detail::Hid obj(H5Oopen(file_.get(), object.c_str(), H5P_DEFAULT), H5Oclose);
    HG_CHECK(obj.valid(), "H5Writer", path_, ": no object '", object, "' to put attribute '", name, "' on");
    if (H5Aexists(obj.get(), name.c_str()) > 0) H5Adelete(obj.get(), name.c_str());
    herr_t status = -1;
    auto write_numbers = [&](hid_t ftype, hid_t mtype, const void* data, size_t n, bool scalar) {
      hsize_t dim = n;
      detail::Hid space(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, nullptr), H5Sclose);
      detail::Hid attr(H5Acreate2(obj.get(), name.c_str(), ftype, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
      status = attr.valid() ? H5Awrite(attr.get(), mtype, data) : -1;
    };
    if (auto* i = std::get_if<int64_t>(&value)) write_numbers(H5T_STD_I64LE, H5T_NATIVE_INT64, i, 1, true);
    else if (auto* f = std::get_if<double>(&value)) write_numbers(H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, f, 1, true);
    else if (auto* iv = std::get_if<std::vector<int64_t>>(&value))
      write_numbers(H5T_STD_I64LE, H5T_NATIVE_INT64, iv->data(), iv->size(), false);
    else if (auto* fv = std::get_if<std::vector<double>>(&value))
      write_numbers(H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, fv->data(), fv->size(), false);
    else {
      const std::string& s = std::get<std::string>(value);
      detail::Hid type = detail::vlen_string_type();
      detail::Hid space(H5Screate(H5S_SCALAR), H5Sclose);
      detail::Hid attr(H5Acreate2(obj.get(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
      const char* ptr = s.c_str();
      status = attr.valid() ? H5Awrite(attr.get(), type.get(), &ptr) : -1;
    }
    HG_CHECK(status >= 0, "H5Writer", path_, ": cannot write attribute '", name, "' on '", object,
             "': ", detail::h5_error_message());
  }

  // Flushes, closes and renames the temporary file into place.
  void commit() {
    HG_CHECK(!committed_, "H5Writer", path_, ": committed twice");
    datasets_.clear();
    const bool flushed = H5Fflush(file_.get(), H5F_SCOPE_GLOBAL) >= 0;
    const bool closed = H5Fclose(file_.get()) >= 0;
    file_ = detail::Hid();  // already closed
    HG_CHECK(flushed && closed, "H5Writer", "cannot finish '", temp_, "': ", detail::h5_error_message());
    std::error_code ec;
    std::filesystem::rename(temp_, path_, ec);
    HG_CHECK(!ec, "H5Writer", "cannot rename '", temp_, "' to '", path_, "': ", ec.message());
    committed_ = true;
  }

 private:
  struct Dataset {
    detail::Hid id;
    int64_t cols = 0, rows = 0;
    hid_t mem_type;
  };
  std::string path_, temp_;
  detail::Hid file_;
  std::map<std::string, Dataset> datasets_;
  bool committed_ = false;
};

// Reads datasets (converted to the element type asked for, as HDF5 converts int32 -> int64 etc.)
// and attributes of a file written by us, h5py, CLAM or TRIDENT.
class H5Reader {
 public:
  explicit H5Reader(std::string path) : path_(std::move(path)) {
    detail::silence_h5_errors();
    HG_CHECK(std::filesystem::exists(path_), "H5Reader", "no such file '", path_, "'");
    file_ = detail::Hid(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    HG_CHECK(file_.valid(), "H5Reader", path_, ": not an HDF5 file or unreadable: ", detail::h5_error_message());
  }
  const std::string& path() const { return path_; }

  bool has(const std::string& name) const {
    if (name.empty() || name == "/") return true;
    return H5Lexists(file_.get(), name.c_str(), H5P_DEFAULT) > 0;
  }

  std::vector<int64_t> shape(const std::string& name) const {
    detail::Hid set = open(name);
    detail::Hid space(H5Dget_space(set.get()), H5Sclose);
    const int rank = H5Sget_simple_extent_ndims(space.get());
    HG_CHECK(rank >= 0, "H5Reader", path_, ": dataset '", name, "' has no simple shape");
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    return std::vector<int64_t>(dims.begin(), dims.end());
  }

  // The whole dataset, row-major, converted to T (any integer or float type on disk).
  template <class T>
  std::vector<T> read(const std::string& name) const {
    detail::Hid set = open(name);
    detail::Hid type(H5Dget_type(set.get()), H5Tclose);
    const H5T_class_t cls = H5Tget_class(type.get());
    HG_CHECK(cls == H5T_INTEGER || cls == H5T_FLOAT, "H5Reader", path_, ": dataset '", name,
             "' holds neither integers nor floats");
    int64_t count = 1;
    for (int64_t d : shape(name)) count *= d;
    std::vector<T> out(static_cast<size_t>(count));
    if (count == 0) return out;
    HG_CHECK(H5Dread(set.get(), detail::native_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) >= 0, "H5Reader",
             path_, ": cannot read dataset '", name, "': ", detail::h5_error_message());
    return out;
  }

  // One attribute of a dataset or group ("/" for the root); nullopt when absent. Integer and float
  // scalars and 1-D arrays, fixed and variable-length strings; other types are an Error.
  std::optional<Attribute> attribute(const std::string& object, const std::string& name) const {
    detail::Hid obj(H5Oopen(file_.get(), object.c_str(), H5P_DEFAULT), H5Oclose);
    HG_CHECK(obj.valid(), "H5Reader", path_, ": no object '", object, "'");
    if (H5Aexists(obj.get(), name.c_str()) <= 0) return std::nullopt;
    detail::Hid attr(H5Aopen(obj.get(), name.c_str(), H5P_DEFAULT), H5Aclose);
    detail::Hid type(H5Aget_type(attr.get()), H5Tclose);
    detail::Hid space(H5Aget_space(attr.get()), H5Sclose);
    const int rank = H5Sget_simple_extent_ndims(space.get());
    const hssize_t n = H5Sget_simple_extent_npoints(space.get());
    const H5T_class_t cls = H5Tget_class(type.get());
    const std::string where = "attribute '" + name + "' of '" + object + "'";
    HG_CHECK(rank <= 1 && n >= 0, "H5Reader", path_, ": ", where, " has rank ", rank, " (expected a scalar or 1-D)");
    if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
      const bool as_int = cls == H5T_INTEGER;
      std::vector<int64_t> ints(as_int ? size_t(n) : 0);
      std::vector<double> reals(as_int ? 0 : size_t(n));
      const herr_t status = as_int ? H5Aread(attr.get(), H5T_NATIVE_INT64, ints.data())
                                   : H5Aread(attr.get(), H5T_NATIVE_DOUBLE, reals.data());
      HG_CHECK(status >= 0, "H5Reader", path_, ": cannot read ", where, ": ", detail::h5_error_message());
      if (rank == 0) return as_int ? Attribute(ints.at(0)) : Attribute(reals.at(0));
      return as_int ? Attribute(std::move(ints)) : Attribute(std::move(reals));
    }
    if (cls == H5T_STRING) {
      HG_CHECK(n == 1, "H5Reader", path_, ": ", where, " is an array of ", n, " strings (expected one)");
      if (H5Tis_variable_str(type.get()) > 0) {
        detail::Hid mem = detail::vlen_string_type();
        char* ptr = nullptr;
        HG_CHECK(H5Aread(attr.get(), mem.get(), &ptr) >= 0, "H5Reader", path_, ": cannot read ", where, ": ",
                 detail::h5_error_message());
        std::string s = ptr ? ptr : "";
        H5free_memory(ptr);
        return Attribute(std::move(s));
      }
      const size_t size = H5Tget_size(type.get());
      std::string s(size, '\0');
      detail::Hid mem(H5Tcopy(type.get()), H5Tclose);
      HG_CHECK(H5Aread(attr.get(), mem.get(), s.data()) >= 0, "H5Reader", path_, ": cannot read ", where, ": ",
               detail::h5_error_message());
      s.resize(s.find('\0') == std::string::npos ? s.size() : s.find('\0'));
      return Attribute(std::move(s));
    }
    fail("H5Reader", path_, ": ", where, " has an unsupported type (expected numbers or a string)");
  }

  // All attributes of a dataset or group, by name; those of unsupported types are left out.
  std::map<std::string, Attribute> attributes(const std::string& object) const {
    detail::Hid obj(H5Oopen(file_.get(), object.c_str(), H5P_DEFAULT), H5Oclose);
    HG_CHECK(obj.valid(), "H5Reader", path_, ": no object '", object, "'");
    H5O_info_t info;
    H5Oget_info2(obj.get(), &info, H5O_INFO_NUM_ATTRS);
    std::map<std::string, Attribute> out;
    for (hsize_t i = 0; i < info.num_attrs; ++i) {
      const ssize_t len = H5Aget_name_by_idx(obj.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
      if (len < 0) {
        H5Eclear2(H5E_DEFAULT);
        continue;
      }
      std::string name(size_t(len) + 1, '\0');
      H5Aget_name_by_idx(obj.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
      name.resize(size_t(len));
      try {
        if (auto value = attribute(object, name)) out.emplace(name, std::move(*value));
      } catch (const Error&) {
      }
    }
    return out;
  }

 private:
  detail::Hid open(const std::string& name) const {
    HG_CHECK(has(name), "H5Reader", path_, ": no dataset '", name, "'");
    detail::Hid set(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
    HG_CHECK(set.valid(), "H5Reader", path_, ": '", name, "' is not a dataset: ", detail::h5_error_message());
    return set;
  }
  std::string path_;
  detail::Hid file_;
};

// ---------------------------------------------------------------------------------------------
// Coordinate and feature files.

// A patch's level-0 top-left corner (x, y), as both tools store it: one row of `coords`.
struct Coord {
  int64_t x = 0, y = 0;
  bool operator==(const Coord&) const = default;
};
static_assert(sizeof(Coord) == 2 * sizeof(int64_t), "Coord rows are written to HDF5 as (N, 2) int64");

// The attributes of `coords`. TRIDENT's set in full, plus CLAM's patch_level (and its level's
// downsample) so CLAM's Whole_Slide_Bag_FP and TRIDENT's read_coords_legacy read our files.
struct PatchGridInfo {
  int64_t patch_size = 0;         // side at the target resolution (TRIDENT); CLAM: side at patch_level
  int64_t patch_size_level0 = 0;  // side in level-0 pixels
  double level0_magnification = 0, target_magnification = 0;
  int64_t overlap = 0;  // at the target resolution
  std::string name, savetodir;
  int64_t level0_width = 0, level0_height = 0;
  // CLAM: reading `patch_size` pixels at `patch_level` covers the patch exactly when the target
  // resolution is a pyramid level (patch_level is that level then); otherwise patch_level is 0
  // and custom_downsample = patch_size_level0 / patch_size, which TRIDENT's legacy reader applies.
  int64_t patch_level = 0;
  double level_downsample = 1;  // of patch_level (CLAM's `downsample` attribute, a pair there)
  double custom_downsample = 1;
  std::string layout;  // when read: "trident" or "clam"
};

enum class CoordsLayout { Trident, Clam };

namespace detail {

inline Attribute number_attr(double v) {
  if (std::isfinite(v) && v == std::round(v) && std::abs(v) < 9e15) return Attribute(static_cast<int64_t>(v));
  return Attribute(v);
}
inline std::optional<double> as_double(const std::map<std::string, Attribute>& a, const std::string& key) {
  auto it = a.find(key);
  if (it == a.end()) return std::nullopt;
  if (auto* i = std::get_if<int64_t>(&it->second)) return double(*i);
  if (auto* d = std::get_if<double>(&it->second)) return *d;
  if (auto* iv = std::get_if<std::vector<int64_t>>(&it->second); iv && !iv->empty()) return double(iv->front());
  if (auto* dv = std::get_if<std::vector<double>>(&it->second); dv && !dv->empty()) return dv->front();
  return std::nullopt;
}
inline std::string as_string(const std::map<std::string, Attribute>& a, const std::string& key) {
  auto it = a.find(key);
  if (it == a.end()) return {};
  if (auto* s = std::get_if<std::string>(&it->second)) return *s;
  return {};
}

inline void write_coords_attributes(H5Writer& w, const std::string& dataset, const PatchGridInfo& g, CoordsLayout layout) {
  if (layout == CoordsLayout::Trident) {
    w.set_attribute(dataset, "patch_size", g.patch_size);
    w.set_attribute(dataset, "patch_size_level0", g.patch_size_level0);
    w.set_attribute(dataset, "level0_magnification", number_attr(g.level0_magnification));
    w.set_attribute(dataset, "target_magnification", number_attr(g.target_magnification));
    w.set_attribute(dataset, "overlap", g.overlap);
    w.set_attribute(dataset, "name", g.name);
    w.set_attribute(dataset, "savetodir", g.savetodir);
    w.set_attribute(dataset, "level0_width", g.level0_width);
    w.set_attribute(dataset, "level0_height", g.level0_height);
    w.set_attribute(dataset, "patch_level", g.patch_level);
    if (g.custom_downsample != 1) w.set_attribute(dataset, "custom_downsample", g.custom_downsample);
  } else {
    // CLAM's save_hdf5 attribute dict: patch_size at patch_level, level dims of patch_level.
    w.set_attribute(dataset, "patch_size", g.patch_size);
    w.set_attribute(dataset, "patch_level", g.patch_level);
    w.set_attribute(dataset, "downsample", std::vector<double>{g.level_downsample, g.level_downsample});
    const auto lw = static_cast<int64_t>(std::llround(g.level0_width / g.level_downsample));
    const auto lh = static_cast<int64_t>(std::llround(g.level0_height / g.level_downsample));
    w.set_attribute(dataset, "downsampled_level_dim", std::vector<int64_t>{lw, lh});
    w.set_attribute(dataset, "level_dim", std::vector<int64_t>{lw, lh});
    w.set_attribute(dataset, "name", g.name);
    w.set_attribute(dataset, "save_path", g.savetodir);
  }
}

// Both layouts, told apart by TRIDENT's patch_size_level0. A CLAM file gives the level-0 side as
// patch_size · downsample[patch_level] · custom_downsample (what TRIDENT's legacy reader computes).
inline PatchGridInfo read_coords_attributes(const H5Reader& r, const std::string& dataset) {
  const auto a = r.attributes(dataset);
  PatchGridInfo g;
  const auto patch_size = as_double(a, "patch_size");
  HG_CHECK(patch_size.has_value(), "read_coords", r.path(), ": '", dataset,
           "' has no patch_size attribute (neither the TRIDENT nor the CLAM layout)");
  g.patch_size = static_cast<int64_t>(*patch_size);
  g.patch_level = static_cast<int64_t>(as_double(a, "patch_level").value_or(0));
  g.custom_downsample = as_double(a, "custom_downsample").value_or(1);
  g.name = as_string(a, "name");
  if (auto l0 = as_double(a, "patch_size_level0")) {
    g.layout = "trident";
    g.patch_size_level0 = static_cast<int64_t>(*l0);
    g.level0_magnification = as_double(a, "level0_magnification").value_or(0);
    g.target_magnification = as_double(a, "target_magnification").value_or(0);
    g.overlap = static_cast<int64_t>(as_double(a, "overlap").value_or(0));
    g.savetodir = as_string(a, "savetodir");
    g.level0_width = static_cast<int64_t>(as_double(a, "level0_width").value_or(0));
    g.level0_height = static_cast<int64_t>(as_double(a, "level0_height").value_or(0));
    g.level_downsample = g.patch_size ? double(g.patch_size_level0) / double(g.patch_size) / g.custom_downsample : 1;
  } else {
    HG_CHECK(a.count("patch_level"), "read_coords", r.path(), ": '", dataset,
             "' has patch_size but neither patch_size_level0 (TRIDENT) nor patch_level (CLAM)");
    g.layout = "clam";
    g.level_downsample = as_double(a, "downsample").value_or(std::pow(2.0, double(g.patch_level)));
    g.patch_size_level0 = static_cast<int64_t>(std::llround(double(g.patch_size) * g.level_downsample * g.custom_downsample));
    g.savetodir = as_string(a, "save_path");
    auto it = a.find("level_dim");
    if (it != a.end())
      if (auto* dims = std::get_if<std::vector<int64_t>>(&it->second); dims && dims->size() == 2) {
        g.level0_width = static_cast<int64_t>(std::llround(double((*dims)[0]) * g.level_downsample));
        g.level0_height = static_cast<int64_t>(std::llround(double((*dims)[1]) * g.level_downsample));
      }
  }
  return g;
}

inline std::vector<Coord> read_coord_rows(const H5Reader& r, const std::string& name) {
  const auto shape = r.shape(name);
  HG_CHECK(shape.size() == 2 && shape[1] == 2, "read_coords", r.path(), ": expected '", name,
           "' of shape (N, 2), got rank ", shape.size(), shape.size() == 2 ? " with " + std::to_string(shape[1]) + " columns" : "");
  const std::vector<int64_t> flat = r.read<int64_t>(name);
  std::vector<Coord> out(flat.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = {flat[2 * i], flat[2 * i + 1]};
  return out;
}

}  // namespace detail

struct CoordsFile {
  std::vector<Coord> coords;
  PatchGridInfo info;
};

// The patches file: `coords` (N, 2) int64, level-0 top-left, chunked (1, 2)... (CLAM chunks rows
// one by one; we chunk by 256 rows, which readers do not see) with the attributes of `layout`.
inline void write_coords(const std::string& path, const std::vector<Coord>& coords, const PatchGridInfo& info,
                         CoordsLayout layout = CoordsLayout::Trident) {
  H5Writer w(path);
  w.write_dataset<int64_t>("coords", reinterpret_cast<const int64_t*>(coords.data()), int64_t(coords.size()), 2);
  detail::write_coords_attributes(w, "coords", info, layout);
  w.commit();
}

inline CoordsFile read_coords(const std::string& path) {
  H5Reader r(path);
  HG_CHECK(r.has("coords"), "read_coords", path, ": no 'coords' dataset");
  return {detail::read_coord_rows(r, "coords"), detail::read_coords_attributes(r, "coords")};
}

struct FeaturesFile {
  std::vector<float> features;  // (N, dim) row-major
  int64_t count = 0, dim = 0;
  std::vector<Coord> coords;
  std::string encoder, name, savetodir;
  std::optional<PatchGridInfo> info;  // TRIDENT's files carry the grid on `coords`; CLAM's do not
};

// TRIDENT's features file: `features` (N, D) float32 with {name, savetodir (the features folder),
// encoder}, and `coords` (N, 2) int64 with the grid's attributes. N may be 0 (a slide without tissue).
inline void write_features(const std::string& path, const float* features, int64_t count, int64_t dim,
                           const std::vector<Coord>& coords, const PatchGridInfo& info, const std::string& encoder) {
  HG_CHECK(int64_t(coords.size()) == count, "write_features", path, ": ", count, " feature rows but ", coords.size(),
           " coordinates");
  H5Writer w(path);
  w.write_dataset<float>("features", features, count, dim, 32);
  w.set_attribute("features", "name", info.name);
  w.set_attribute("features", "savetodir", std::filesystem::absolute(path).parent_path().string());
  w.set_attribute("features", "encoder", encoder);
  w.write_dataset<int64_t>("coords", reinterpret_cast<const int64_t*>(coords.data()), count, 2);
  detail::write_coords_attributes(w, "coords", info, CoordsLayout::Trident);
  w.commit();
}

// Our files, TRIDENT's, and CLAM's h5_files/<id>.h5 (features + int32 coords, no attributes).
inline FeaturesFile read_features(const std::string& path) {
  H5Reader r(path);
  HG_CHECK(r.has("features"), "read_features", path, ": no 'features' dataset");
  FeaturesFile f;
  const auto shape = r.shape("features");
  HG_CHECK(shape.size() == 2, "read_features", path, ": expected 'features' of shape (N, D), got rank ", shape.size());
  f.count = shape[0];
  f.dim = shape[1];
  f.features = r.read<float>("features");
  const auto a = r.attributes("features");
  f.encoder = detail::as_string(a, "encoder");
  f.name = detail::as_string(a, "name");
  f.savetodir = detail::as_string(a, "savetodir");
  if (r.has("coords")) {
    f.coords = detail::read_coord_rows(r, "coords");
    HG_CHECK(int64_t(f.coords.size()) == f.count, "read_features", path, ": ", f.count, " feature rows but ",
             f.coords.size(), " coordinates");
    const auto ca = r.attributes("coords");
    if (ca.count("patch_size")) f.info = detail::read_coords_attributes(r, "coords");
  }
  return f;
}

}  // namespace histograd::wsi

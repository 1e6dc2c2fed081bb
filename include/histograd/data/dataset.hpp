// Datasets of images for training and evaluation: the Dataset interface the loader reads from,
// ImageFolder (root/<class>/..., classes and samples ordered as torchvision.datasets.ImageFolder
// orders them: sorted class folders, then os.walk's sorted directories and sorted file names) and
// UnlabeledImages (every image under a folder, or an explicit list).
#pragma once
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../io/image.hpp"

namespace histograd::data {

// What the loader reads: a fixed number of samples, each an RGB image and an integer label.
// load(i) may be called from several loader threads at once (for different or equal i), so an
// implementation must be safe for that; everything else is const.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  virtual io::Image load(size_t i) = 0;
  virtual int label(size_t i) const = 0;                 // -1 where the dataset has no labels
  virtual std::vector<std::string> classes() const = 0;  // class names in label order; empty if unlabeled
  // A name for sample i in messages (a file path for file datasets).
  virtual std::string path(size_t i) const { return "sample " + std::to_string(i); }
  // How many samples failed to decode and were skipped (OnBadImage::Skip) so far.
  virtual size_t skipped() const { return 0; }
};

// What to do with a file that does not decode: Stop throws a histograd::Error naming the file;
// Skip warns once on stderr, counts it in skipped() and throws SkippedImage, on which the
// DataLoader delivers the next sample ((i + 1) mod size, deterministically) in its place.
enum class OnBadImage { Skip, Stop };

class SkippedImage : public Error {
 public:
  explicit SkippedImage(const std::string& message) : Error(message) {}
};

namespace detail {

// torchvision's IMG_EXTENSIONS that name the formats read_image decodes or that a tile folder
// commonly holds, matched case-insensitively as torchvision's has_file_allowed_extension does
// (a .tif is listed so that it is reported, not silently ignored: read_image does not decode TIFF).
inline bool has_image_extension(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".tif" || ext == ".tiff";
}

// The image files under `dir` in the order of torchvision's make_dataset: directories as
// sorted(os.walk(dir, followlinks=True)) visits them (ordered by their path strings), and within
// each directory the file names sorted. Byte-wise std::string order equals Python's code-point
// order on UTF-8 names.
inline std::vector<std::string> images_under(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> dirs{dir.string()};
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink);
       it != fs::recursive_directory_iterator(); ++it)
    if (it->is_directory()) dirs.push_back(it->path().string());
  std::sort(dirs.begin(), dirs.end());
  std::vector<std::string> files;
  for (const std::string& d : dirs) {
    std::vector<std::string> names;
    for (const fs::directory_entry& entry : fs::directory_iterator(d))
      if (!entry.is_directory() && has_image_extension(entry.path())) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) files.push_back((fs::path(d) / name).string());
  }
  return files;
}

inline void check_folder(const char* op, const std::string& root) {
  namespace fs = std::filesystem;
  std::error_code ec;
  HG_CHECK(fs::exists(root, ec), op, "expected an existing folder, got '", root, "' (no such file or directory)");
  HG_CHECK(fs::is_directory(root, ec), op, "expected a folder, got '", root, "' (not a directory)");
}

}  // namespace detail

// Common part of the file datasets: the file list, the decode and the bad-image policy.
class FileImageDataset : public Dataset {
 public:
  size_t size() const override { return files_.size(); }
  std::string path(size_t i) const override {
    HG_CHECK(i < files_.size(), dataset_name_, "expected a sample index below ", files_.size(), ", got ", i);
    return files_[i];
  }
  size_t skipped() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return bad_.size();
  }
  OnBadImage on_bad_image() const { return on_bad_image_; }

  io::Image load(size_t i) override {
    const std::string& file = path(i);
    if (on_bad_image_ == OnBadImage::Skip) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (bad_.count(i)) throw SkippedImage(histograd::detail::concat(dataset_name_, ": skipped '", file, "' (it did not decode)"));
    }
    try {
      return io::read_image(file);
    } catch (const Error& e) {
      if (on_bad_image_ == OnBadImage::Stop)
        fail(dataset_name_, "cannot decode '", file, "': ", e.what());
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (bad_.insert(i).second)
          std::cerr << "warning: " << dataset_name_ << ": skipping '" << file << "', it does not decode (" << e.what()
                    << ")\n";
      }
      throw SkippedImage(histograd::detail::concat(dataset_name_, ": skipped '", file, "': ", e.what()));
    }
  }

 protected:
  FileImageDataset(const char* name, OnBadImage on_bad_image) : dataset_name_(name), on_bad_image_(on_bad_image) {}

  const char* dataset_name_;
  OnBadImage on_bad_image_;
  std::vector<std::string> files_;

 private:
  mutable std::mutex mutex_;
  std::set<size_t> bad_;  // indices found not to decode (Skip), each warned about once
};

// root/<class>/**/<image>: labels are the positions of the class folders in sorted order.
// Every class folder must hold at least one image (torchvision raises the same way).
class ImageFolder : public FileImageDataset {
 public:
  explicit ImageFolder(const std::string& root, OnBadImage on_bad_image = OnBadImage::Stop)
      : FileImageDataset("ImageFolder", on_bad_image), root_(root) {
    namespace fs = std::filesystem;
    detail::check_folder("ImageFolder", root);
    for (const fs::directory_entry& entry : fs::directory_iterator(root))
      if (entry.is_directory()) classes_.push_back(entry.path().filename().string());
    std::sort(classes_.begin(), classes_.end());
    HG_CHECK(!classes_.empty(), "ImageFolder", "expected one sub-folder per class in '", root, "', found none");
    std::string empty;
    for (size_t c = 0; c < classes_.size(); ++c) {
      const std::vector<std::string> files = detail::images_under(fs::path(root) / classes_[c]);
      if (files.empty()) empty += (empty.empty() ? "'" : ", '") + (fs::path(root) / classes_[c]).string() + "'";
      files_.insert(files_.end(), files.begin(), files.end());
      labels_.insert(labels_.end(), files.size(), static_cast<int>(c));
    }
    HG_CHECK(empty.empty(), "ImageFolder", "expected images (.png, .jpg, .jpeg, .tif) in every class folder, found none in ",
             empty);
  }

  int label(size_t i) const override {
    HG_CHECK(i < labels_.size(), "ImageFolder", "expected a sample index below ", labels_.size(), ", got ", i);
    return labels_[i];
  }
  std::vector<std::string> classes() const override { return classes_; }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
  std::vector<std::string> classes_;
  std::vector<int> labels_;
};

// Every image under a folder (recursively, in ImageFolder's walk order), or an explicit list of
// files kept in the given order. Labels are -1.
class UnlabeledImages : public FileImageDataset {
 public:
  explicit UnlabeledImages(const std::string& root, OnBadImage on_bad_image = OnBadImage::Stop)
      : FileImageDataset("UnlabeledImages", on_bad_image) {
    detail::check_folder("UnlabeledImages", root);
    files_ = detail::images_under(root);
    HG_CHECK(!files_.empty(), "UnlabeledImages", "expected images (.png, .jpg, .jpeg, .tif) under '", root,
             "', found none");
  }
  explicit UnlabeledImages(std::vector<std::string> files, OnBadImage on_bad_image = OnBadImage::Stop)
      : FileImageDataset("UnlabeledImages", on_bad_image) {
    HG_CHECK(!files.empty(), "UnlabeledImages", "expected a non-empty list of image files, got none");
    files_ = std::move(files);
  }

  int label(size_t i) const override {
    HG_CHECK(i < files_.size(), "UnlabeledImages", "expected a sample index below ", files_.size(), ", got ", i);
    return -1;
  }
  std::vector<std::string> classes() const override { return {}; }
};

}  // namespace histograd::data

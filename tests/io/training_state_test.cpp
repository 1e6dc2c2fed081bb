#include "test_util.hpp"

#include <histograd/io/training_state.hpp>
#include <histograd/optim/optimizer.hpp>

#include "../../examples/common/training.hpp"

#include <filesystem>
#include <fstream>

// Training checkpoints (round trip, resume to the same numbers, truncated / foreign files,
// atomic replacement when writing fails, model compatibility) and the training programs'
// helpers of examples/common/training.hpp (flags, CSV log, loss plot, progress, non-finite stop).

namespace fs = std::filesystem;

namespace {

// A fresh, empty folder for one test case.
fs::path scratch(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("histograd_training_state_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<char> file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

template <class T>
struct Net : hg::nn::Module<T> {
  hg::Generator gen{5};
  hg::nn::Linear<T> fc1{3, 4, true, gen}, fc2{4, 2, true, gen};
  explicit Net(uint64_t seed = 5) : gen(seed) {}
  void visit(hg::nn::ModuleVisitor<T>& v) override {
    v.module("fc1", fc1);
    v.module("fc2", fc2);
  }
  hg::Tensor<T> forward(const hg::Tensor<T>& x) { return fc2.forward(hg::relu(fc1.forward(x))); }
};

// One training step of Net on a batch drawn from `data_gen`; returns the loss.
template <class T>
double train_step(Net<T>& net, hg::optim::AdamW<T>& opt, hg::Generator& data_gen) {
  auto x = hg::randn<T>({6, 3}, data_gen);
  auto y = net.forward(x);
  auto loss = hg::mean(y * y);
  opt.zero_grad();
  loss.backward();
  opt.step();
  return double(loss.item());
}

}  // namespace

TEST_CASE_TEMPLATE("a training state round trip resumes to the same numbers as an uninterrupted run", T, float, double) {
  const fs::path dir = scratch("roundtrip");
  const std::string path = (dir / "checkpoint.safetensors").string();

  // Uninterrupted: 6 steps. Interrupted: 3 steps, checkpoint, fresh objects, load, 3 more.
  Net<T> straight;
  hg::optim::AdamW<T> straight_opt(hg::optim::make_param_groups(straight, 0.05, 1e-2));
  hg::Generator straight_data(77);
  std::vector<double> straight_losses;
  for (int i = 0; i < 6; ++i) straight_losses.push_back(train_step(straight, straight_opt, straight_data));

  {
    Net<T> net;
    hg::optim::AdamW<T> opt(hg::optim::make_param_groups(net, 0.05, 1e-2));
    hg::Generator data(77);
    for (int i = 0; i < 3; ++i) CHECK(train_step(net, opt, data) == straight_losses[size_t(i)]);
    hg::io::TrainingState<T> state;
    state.put_state_dict("student.", net.state_dict());
    state.put_state_dict("teacher.", net.state_dict());
    state.put_optimizer(opt.state());
    state.tensors["loss.center"] = hg::full<T>({1, 2}, T(0.25));
    state.set_int("iteration", 3);
    state.set_int("epoch", -1);
    state.set_double("teacher_momentum", 0.1 + 0.2);  // not a short decimal: must come back bit for bit
    state.set_string("model", "net_3_4_2");
    state.put_generator(data, "data_rng");
    hg::Generator big_seed(0xFFFFFFFFFFFFFFF1ull);
    state.put_generator(big_seed, "rng");
    hg::io::save_training_state(path, state);
  }

  auto loaded = hg::io::load_training_state<T>(path);
  CHECK(loaded.get_int("iteration") == 3);
  CHECK(loaded.get_int("epoch") == -1);
  CHECK(loaded.get_double("teacher_momentum") == 0.1 + 0.2);
  CHECK(loaded.get_string("model") == "net_3_4_2");
  CHECK(loaded.get_uint("rng.seed") == 0xFFFFFFFFFFFFFFF1ull);
  CHECK(loaded.get_int("missing", 42) == 42);
  CHECK_FALSE(loaded.has("format"));
  check_close(loaded.tensors.at("loss.center"), {0.25, 0.25}, 0);
  CHECK(loaded.get_state_dict("teacher.").size() == 4);

  Net<T> net(99);  // different initial weights: everything must come from the checkpoint
  hg::io::check_compatible(loaded, "net_3_4_2", net);
  net.load_state_dict(loaded.get_state_dict("student."));
  hg::optim::AdamW<T> opt(hg::optim::make_param_groups(net, 0.05, 1e-2));
  opt.load_state(loaded.get_optimizer());
  hg::Generator data;
  loaded.restore_generator(data, "data_rng");
  for (int i = 3; i < 6; ++i) CHECK(train_step(net, opt, data) == straight_losses[size_t(i)]);
  for (auto& [name, p] : net.named_parameters()) {
    CAPTURE(name);
    auto expected = straight.state_dict().at(name);
    CHECK(p.to_vector() == expected.to_vector());
  }
  fs::remove_all(dir);
}

TEST_CASE("truncated, corrupt and foreign checkpoints give clear errors") {
  const fs::path dir = scratch("truncated");
  const std::string path = (dir / "checkpoint.safetensors").string();
  hg::io::TrainingState<float> state;
  state.tensors["student.w"] = hg::ones<float>({64, 64});
  state.set_int("iteration", 10);
  hg::io::save_training_state(path, state);
  const auto bytes = file_bytes(path);

  auto write_prefix = [&](const fs::path& p, size_t count) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(count));
  };
  const fs::path half = dir / "half.safetensors";
  write_prefix(half, bytes.size() / 2);
  CHECK_THROWS_WITH_AS(hg::io::load_training_state<float>(half.string()),
                       doctest::Contains(("load_training_state: cannot resume from '" + half.string() + "'").c_str()), hg::Error);
  CHECK_THROWS_WITH_AS(hg::io::load_training_state<float>(half.string()), doctest::Contains("truncated"), hg::Error);
  const fs::path tiny = dir / "tiny.safetensors";
  write_prefix(tiny, 40);  // inside the header
  CHECK_THROWS_WITH_AS(hg::io::load_training_state<float>(tiny.string()), doctest::Contains("does not fit"), hg::Error);
  write_prefix(tiny, 0);
  CHECK_THROWS_WITH_AS(hg::io::load_training_state<float>(tiny.string()), doctest::Contains("cannot resume from"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(hg::io::load_training_state<float>((dir / "absent.safetensors").string()),
                       doctest::Contains("cannot resume from"), hg::Error);

  const fs::path weights = dir / "weights.safetensors";  // model weights, not a training state
  hg::io::save_safetensors<float>(weights.string(), {{"w", hg::ones<float>({2})}});
  CHECK_THROWS_WITH_AS(hg::io::load_training_state<float>(weights.string()),
                       doctest::Contains("not a histograd training state (metadata 'format' is missing"), hg::Error);
  fs::remove_all(dir);
}

TEST_CASE("a failed save leaves the previous checkpoint in place and no temporary file") {
  const fs::path dir = scratch("atomic");
  const std::string path = (dir / "checkpoint.safetensors").string();
  hg::io::TrainingState<float> good;
  good.tensors["student.w"] = hg::full<float>({3}, 1.5f);
  good.set_int("iteration", 100);
  hg::io::save_training_state(path, good);
  const auto before = file_bytes(path);

  // 1. A tensor that cannot be written (undefined): refused before anything touches the disk.
  hg::io::TrainingState<float> broken = good;
  broken.tensors["teacher.w"] = hg::Tensor<float>();
  broken.set_int("iteration", 200);
  CHECK_THROWS_WITH_AS(hg::io::save_training_state(path, broken),
                       doctest::Contains("tensor 'teacher.w' is undefined; nothing was written"), hg::Error);
  CHECK(file_bytes(path) == before);

  // 2. The temporary file cannot be created (a folder sits at its name; as root, permissions
  // would not stop the write): the old checkpoint survives.
  const fs::path blocker = path + ".tmp" + std::to_string(::getpid());
  fs::create_directory(blocker);
  hg::io::TrainingState<float> newer = good;
  newer.set_int("iteration", 300);
  CHECK_THROWS_WITH_AS(hg::io::save_training_state(path, newer), doctest::Contains("cannot write"), hg::Error);
  CHECK(file_bytes(path) == before);
  fs::remove(blocker);

  // 3. A folder that does not exist.
  CHECK_THROWS_AS(hg::io::save_training_state((dir / "no" / "such" / "dir.safetensors").string(), newer), hg::Error);

  // Nothing but the checkpoint is left behind, and it still loads.
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  CHECK(names == std::vector<std::string>{"checkpoint.safetensors"});
  CHECK(hg::io::load_training_state<float>(path).get_int("iteration") == 100);

  // A successful save replaces it.
  hg::io::save_training_state(path, newer);
  CHECK(hg::io::load_training_state<float>(path).get_int("iteration") == 300);
  CHECK_THROWS_WITH_AS(hg::io::save_training_state(path, [] {
                         hg::io::TrainingState<float> s;
                         s.set_string("format", "x");
                         return s;
                       }()),
                       doctest::Contains("'format' is reserved"), hg::Error);
  fs::remove_all(dir);
}

TEST_CASE("check_compatible refuses a checkpoint of another model, naming the first mismatching key") {
  Net<double> net;
  hg::io::TrainingState<double> state;
  state.put_state_dict("student.", net.state_dict());
  state.set_string("model", "net_3_4_2");
  hg::io::check_compatible(state, "net_3_4_2", net);
  hg::io::check_compatible(state, "", net);  // no name check

  CHECK_THROWS_WITH_AS(hg::io::check_compatible(state, "vit_small", net),
                       doctest::Contains("check_compatible: the checkpoint was written by model 'net_3_4_2', this run is 'vit_small'"),
                       hg::Error);
  auto shapes = std::map<std::string, hg::Shape>{{"fc1.weight", {4, 3}}, {"fc1.bias", {4}}, {"fc2.weight", {2, 4}},
                                                 {"fc2.bias", {2}}};
  auto wider = shapes;
  wider["fc2.weight"] = {5, 4};
  CHECK_THROWS_WITH_AS(hg::io::check_compatible(state, "", wider),
                       doctest::Contains("'student.fc2.weight' has shape [2, 4] in the checkpoint but [5, 4] in the model"),
                       hg::Error);
  auto more = shapes;
  more["head.weight"] = {2, 2};
  CHECK_THROWS_WITH_AS(hg::io::check_compatible(state, "", more), doctest::Contains("has no 'student.head.weight'"),
                       hg::Error);
  auto fewer = shapes;
  fewer.erase("fc1.bias");
  CHECK_THROWS_WITH_AS(hg::io::check_compatible(state, "", fewer),
                       doctest::Contains("the checkpoint has 'student.fc1.bias', which the model does not"), hg::Error);
  state.metadata.erase("model");
  CHECK_THROWS_WITH_AS(hg::io::check_compatible(state, "net_3_4_2", net),
                       doctest::Contains("does not say which model wrote it"), hg::Error);
  CHECK_THROWS_WITH_AS(state.get_state_dict("teacher."), doctest::Contains("no tensors under 'teacher.'"), hg::Error);
  CHECK_THROWS_WITH_AS(state.get_int("iteration"), doctest::Contains("no entry 'iteration'"), hg::Error);
  state.set_string("iteration", "12x");
  CHECK_THROWS_WITH_AS(state.get_int("iteration"), doctest::Contains("entry 'iteration' = '12x' is not an integer"),
                       hg::Error);
}

// ---- examples/common/training.hpp ----

namespace {
hg::training::Flags make_flags() {
  hg::training::Flags flags("train_dino", "DINO pretraining.");
  flags.option("epochs", "100", "training epochs")
      .option("lr", "0.0005", "peak learning rate")
      .option("batch_size", "64", "images per step")
      .option("output-dir", "runs/dino", "where checkpoints go")
      .flag("resume", "continue from the last checkpoint");
  return flags;
}
void parse(hg::training::Flags& flags, std::vector<const char*> args) {
  args.insert(args.begin(), "train_dino");
  flags.parse(int(args.size()), args.data());
}
}  // namespace

TEST_CASE("flags: command line, config file, precedence, typed getters and errors") {
  auto flags = make_flags();
  parse(flags, {});
  CHECK(flags.get_int("epochs") == 100);
  CHECK(flags.get_double("lr") == 0.0005);
  CHECK(flags.get<int>("batch-size") == 64);
  CHECK_FALSE(flags.get_bool("resume"));
  CHECK_FALSE(flags.is_set("epochs"));

  const fs::path dir = scratch("flags");
  const fs::path config = dir / "dino.cfg";
  std::ofstream(config) << "# a config\nepochs = 5\n  lr=0.001   # peak\n\nbatch-size = 8\nresume = true\n";
  flags = make_flags();
  parse(flags, {"--epochs", "7", "--config", config.string().c_str(), "--output_dir=out/x"});
  CHECK(flags.get_int("epochs") == 7);  // the command line wins, even before --config
  CHECK(flags.get_double("lr") == 0.001);
  CHECK(flags.get_int("batch_size") == 8);
  CHECK(flags.get_bool("resume"));
  CHECK(flags.get_string("output-dir") == "out/x");
  CHECK(flags.is_set("lr"));
  CHECK(flags.values().at("epochs") == "7");

  flags = make_flags();
  parse(flags, {"--resume", "--lr", "1e-3"});
  CHECK(flags.get_bool("resume"));
  CHECK(flags.get_double("lr") == 1e-3);

  flags = make_flags();
  CHECK_THROWS_WITH_AS(parse(flags, {"--lrr", "1"}),
                       doctest::Contains("flags: unknown option '--lrr' (valid: --batch-size, --epochs, --lr, "
                                         "--output-dir, --resume, --config, --help)"),
                       hg::Error);
  CHECK_THROWS_WITH_AS(parse(flags, {"--epochs"}), doctest::Contains("--epochs expects a value"), hg::Error);
  CHECK_THROWS_WITH_AS(parse(flags, {"epochs"}), doctest::Contains("unexpected argument 'epochs'"), hg::Error);
  std::ofstream(dir / "bad.cfg") << "epochs = 3\nwarmup = 2\n";
  CHECK_THROWS_WITH_AS(parse(flags, {"--config", (dir / "bad.cfg").string().c_str()}),
                       doctest::Contains("bad.cfg line 2: unknown key 'warmup' (valid: --batch-size"), hg::Error);
  std::ofstream(dir / "bad2.cfg") << "epochs 3\n";
  CHECK_THROWS_WITH_AS(parse(flags, {"--config", (dir / "bad2.cfg").string().c_str()}),
                       doctest::Contains("line 1: expected 'key = value', got 'epochs 3'"), hg::Error);
  CHECK_THROWS_WITH_AS(parse(flags, {"--config", (dir / "absent.cfg").string().c_str()}),
                       doctest::Contains("cannot read config file"), hg::Error);

  flags = make_flags();
  parse(flags, {"--epochs", "ten", "--lr", "fast", "--resume=maybe"});
  CHECK_THROWS_WITH_AS(flags.get_int("epochs"),
                       doctest::Contains("flags: --epochs expects an integer, got 'ten' (from the command line)"), hg::Error);
  CHECK_THROWS_WITH_AS(flags.get_double("lr"), doctest::Contains("--lr expects a number, got 'fast'"), hg::Error);
  CHECK_THROWS_WITH_AS(flags.get_bool("resume"), doctest::Contains("--resume expects true or false, got 'maybe'"), hg::Error);
  CHECK_THROWS_WITH_AS(flags.get_int("momentum"), doctest::Contains("undeclared option 'momentum'"), hg::Error);

  flags = make_flags();
  parse(flags, {"--help"});
  CHECK(flags.help_requested());
  const std::string help = flags.help();
  CHECK(help.find("usage: train_dino") != std::string::npos);
  CHECK(help.find("--batch-size VALUE") != std::string::npos);
  CHECK(help.find("peak learning rate (default: 0.0005)") != std::string::npos);
  CHECK(help.find("--resume") != std::string::npos);
  CHECK(help.find("--config FILE") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("CSV log: header once, resume drops rows past the checkpoint and appends") {
  const fs::path dir = scratch("csv");
  const std::string path = (dir / "log.csv").string();
  {
    hg::training::CsvLogger log(path, {"iteration", "loss", "lr"});
    for (int i = 0; i < 5; ++i) log.log({double(i), 1.0 / (i + 1), 1e-4});
  }
  {
    hg::training::CsvLogger log(path, {"iteration", "loss", "lr"}, 3);  // checkpoint taken before iteration 3
    log.log({3, 0.3, 1e-4});
    CHECK_THROWS_WITH_AS(log.log({1, 2}), doctest::Contains("CsvLogger: expected 3 values (iteration,loss,lr), got 2"),
                         hg::Error);
  }
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  CHECK(lines == std::vector<std::string>{"iteration,loss,lr", "0,1,0.0001", "1,0.5,0.0001", "2,0.3333333333,0.0001",
                                          "3,0.3,0.0001"});
  CHECK_THROWS_WITH_AS(hg::training::CsvLogger(path, {"iteration", "total_loss"}, 3),
                       doctest::Contains("cannot resume: its header is 'iteration,loss,lr'"), hg::Error);
  hg::training::CsvLogger fresh(path, {"iteration", "loss", "lr"});  // not resuming: starts over
  CHECK(fs::file_size(path) == std::string("iteration,loss,lr\n").size());

  auto [x, y] = hg::training::read_csv_columns((dir / "log.csv").string(), "iteration", "loss");
  CHECK(x.empty());
  fs::remove_all(dir);
}

TEST_CASE("loss-curve PNG: axes, curve and labels on a white canvas") {
  const fs::path dir = scratch("plot");
  const std::string csv = (dir / "log.csv").string(), png = (dir / "loss.png").string();
  {
    hg::training::CsvLogger log(csv, {"iteration", "loss"});
    for (int i = 0; i < 200; ++i) log.log({double(i), 5.0 * std::exp(-i / 50.0) + 0.1 * std::sin(i)});
    log.log({200, NAN});  // skipped
  }
  hg::training::plot_csv(csv, png);
  auto image = hg::io::read_image(png);
  CHECK(image.width == 800);
  CHECK(image.height == 480);
  auto pixel = [&](int64_t x, int64_t y) {
    const uint8_t* p = &image.pixels[size_t((y * image.width + x) * 3)];
    return std::array<int, 3>{p[0], p[1], p[2]};
  };
  CHECK(pixel(5, 5) == std::array<int, 3>{255, 255, 255});
  CHECK(pixel(70, 200) == std::array<int, 3>{0, 0, 0});  // the y axis
  int64_t blue = 0, black = 0;
  for (int64_t y = 0; y < image.height; ++y)
    for (int64_t x = 0; x < image.width; ++x) {
      blue += pixel(x, y) == std::array<int, 3>{31, 119, 180};
      black += pixel(x, y) == std::array<int, 3>{0, 0, 0};
    }
  CHECK(blue > 700);   // a 2-pixel polyline across ~710 columns
  CHECK(black > 1500);  // two axes, ticks and digits
  // The first point (highest loss) sits at the top left of the plot area, the curve falls.
  int64_t first_blue_row = -1;
  for (int64_t y = 0; y < image.height && first_blue_row < 0; ++y)
    if (pixel(71, y) == std::array<int, 3>{31, 119, 180}) first_blue_row = y;
  CHECK(first_blue_row >= 0);
  CHECK(first_blue_row < 60);

  CHECK_THROWS_WITH_AS(hg::training::plot_loss_curve(png, {1, 2}, {NAN, INFINITY}),
                       doctest::Contains("no finite points to plot"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::training::plot_csv(csv, png, "iteration", "accuracy"), doctest::Contains("no column 'accuracy'"),
                       hg::Error);
  fs::remove_all(dir);
}

TEST_CASE("progress bar lines and the non-finite loss stop") {
  std::ostringstream out;
  hg::training::ProgressBar bar(100, 0, out, /*is_tty=*/0, /*plain_every=*/25);
  for (int64_t i = 1; i <= 100; ++i) bar.update(i, 1.0 / double(i), 16);
  bar.finish();
  std::vector<std::string> lines;
  std::istringstream in(out.str());
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  REQUIRE(lines.size() == 4);  // iterations 25, 50, 75, 100
  CHECK(lines[0].find("25/100 loss 0.0400") != std::string::npos);
  CHECK(lines[3].find("[########################] 100/100") != std::string::npos);
  CHECK(out.str().find('\r') == std::string::npos);

  hg::training::ProgressBar resumed(1000, 500, out, 0);
  resumed.update(510, 2.5, 160);
  const std::string line = resumed.line(510, 2.5, 2.0);  // 10 iterations and 160 images in 2 s
  CHECK(line.find("510/1000 loss 2.5000 | 80.0 img/s | ETA 01:38") != std::string::npos);
  CHECK(hg::training::ProgressBar::format_duration(3725) == "1:02:05");

  std::ostringstream tty_out;
  hg::training::ProgressBar tty(10, 0, tty_out, 1);
  tty.update(1, 0.5, 4);
  tty.update(2, 0.4, 4);
  tty.finish();
  CHECK(tty_out.str().find("\r[##") != std::string::npos);
  CHECK(tty_out.str().back() == '\n');

  hg::training::check_finite(1.5, 3);
  CHECK_THROWS_WITH_AS(hg::training::check_finite(std::nan(""), 7),
                       doctest::Contains("training stopped: non-finite loss (nan) at iteration 7"), hg::Error);
  CHECK_THROWS_WITH_AS(hg::training::check_finite(-INFINITY, 12),
                       doctest::Contains("training stopped: non-finite loss (-inf) at iteration 12"), hg::Error);
}

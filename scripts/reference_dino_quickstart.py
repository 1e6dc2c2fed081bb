"""The quickstart's experiment with the reference DINO in PyTorch, for comparison with train_dino.

train_dino's claim is that a few CPU minutes of DINO lift the k-NN accuracy of a small ViT above
its random initialisation on the built-in synthetic H&E tiles. This script runs the same
experiment with facebookresearch/dino itself, so a result of train_dino can be told apart from a
property of DINO at this budget: same tiles (written by the synthetic_tiles example), same ViT,
head, crops, schedules and k-NN evaluation as train_dino's defaults.

Imported from a checkout, nothing copied: vision_transformer.py (VisionTransformer, DINOHead),
utils.py (MultiCropWrapper, get_params_groups, cosine_scheduler, clip_gradients,
cancel_gradients_last_layer, GaussianBlur, Solarization) and main_dino.py (DINOLoss, whose
centre update all-reduces, hence the one-process gloo group). The training loop follows
main_dino.train_one_epoch: per-iteration lr/wd/momentum schedules, AdamW, clipping, last-layer
freezing, EMA teacher. The augmentation is main_dino's DataAugmentationDINO at train_dino's crop
sizes (32 and 16 px) with the pathology extras train_dino turns on (vertical flip, 90-degree
rotations); PIL and torchvision random streams differ from train_dino's, so single runs differ
by a few points and only the picture should agree.

Run:
  cmake --build build/main --target synthetic_tiles    # after scripts/run_main.sh configured build/main
  build/main/examples/synthetic_tiles --out /tmp/tiles  # train_dino's tiles for --seed 0
  python3 scripts/reference_dino_quickstart.py --tiles /tmp/tiles [--eval-every 156]
Flags mirror train_dino's (--patch-size, --epochs, --momentum-teacher, ...).
"""
import argparse
import copy
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torchvision import datasets, transforms

MIRROR = "/work/.mirror/facebookresearch+dino/repo"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", required=True, help="folder with train/ and test/ written by synthetic_tiles")
    p.add_argument("--dino-dir", default="/work/refs/dino", help="holds utils.py and vision_transformer.py")
    p.add_argument("--main-dino", default=None, help="main_dino.py (default: <dino-dir>/main_dino.py, else the mirror)")
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--embed-dim", type=int, default=96)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--out-dim", type=int, default=1024)
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--bottleneck-dim", type=int, default=128)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.004, help="at batch 256, scaled by batch/256")
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--weight-decay", type=float, default=0.04)
    p.add_argument("--weight-decay-end", type=float, default=0.4)
    p.add_argument("--momentum-teacher", type=float, default=0.98)
    p.add_argument("--teacher-temp", type=float, default=0.04)
    p.add_argument("--clip-grad", type=float, default=3.0)
    p.add_argument("--freeze-last-layer", type=int, default=1)
    p.add_argument("--global-size", type=int, default=32)
    p.add_argument("--local-size", type=int, default=16)
    p.add_argument("--local-crops", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=0, help="iterations between k-NN evaluations of the teacher")
    return p.parse_args()


def import_reference(args):
    main_path = args.main_dino or os.path.join(args.dino_dir, "main_dino.py")
    if not os.path.exists(main_path):
        main_path = os.path.join(tempfile.mkdtemp(), "main_dino.py")
        with open(main_path, "wb") as f:
            f.write(subprocess.check_output(["git", "--git-dir", MIRROR, "show", "HEAD:main_dino.py"]))
    sys.path.insert(0, args.dino_dir)
    spec = importlib.util.spec_from_file_location("main_dino", main_path)
    main_dino = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main_dino)
    import utils
    import vision_transformer as vits
    return main_dino, utils, vits


class Rotate90:
    def __call__(self, img):
        return img.rotate(90 * random.randint(0, 3))


def multi_crop(args, utils):
    """DataAugmentationDINO at train_dino's sizes, plus vertical flip and 90-degree rotations."""
    normalize = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    flip_and_color = transforms.Compose([
        transforms.RandomHorizontalFlip(p=0.5), transforms.RandomVerticalFlip(p=0.5), Rotate90(),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2)])
    bicubic = transforms.InterpolationMode.BICUBIC
    global1 = transforms.Compose([transforms.RandomResizedCrop(args.global_size, scale=(0.4, 1), interpolation=bicubic),
                                  flip_and_color, utils.GaussianBlur(1.0), normalize])
    global2 = transforms.Compose([transforms.RandomResizedCrop(args.global_size, scale=(0.4, 1), interpolation=bicubic),
                                  flip_and_color, utils.GaussianBlur(0.1), utils.Solarization(0.2), normalize])
    local = transforms.Compose([transforms.RandomResizedCrop(args.local_size, scale=(0.05, 0.4), interpolation=bicubic),
                                flip_and_color, utils.GaussianBlur(p=0.5), normalize])
    evaluation = transforms.Compose([transforms.Resize(args.global_size, interpolation=bicubic),
                                     transforms.CenterCrop(args.global_size), normalize])
    return (lambda img: [global1(img), global2(img)] + [local(img) for _ in range(args.local_crops)]), evaluation


def knn_top1(backbone, bank, queries, classes, k=20, temperature=0.07):
    """DINO's eval_knn: cosine similarity of CLS features, k nearest, votes weighted exp(s/T)."""
    def features(dataset):
        backbone.eval()
        out, labels = [], []
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(dataset, batch_size=128):
                out.append(F.normalize(backbone(x), dim=1))
                labels.append(y)
        return torch.cat(out), torch.cat(labels)
    bank_f, bank_l = features(bank)
    query_f, query_l = features(queries)
    similarity, index = (query_f @ bank_f.T).topk(k, dim=1)
    votes = torch.zeros(len(query_f), classes).scatter_add_(1, bank_l[index], (similarity / temperature).exp())
    return 100.0 * (votes.argmax(1) == query_l).float().mean().item()


def main():
    args = parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    dist.init_process_group("gloo", init_method="file://" + os.path.join(tempfile.mkdtemp(), "pg"), rank=0, world_size=1)
    main_dino, utils, vits = import_reference(args)

    crops, evaluation = multi_crop(args, utils)
    train = datasets.ImageFolder(os.path.join(args.tiles, "train"), transform=crops)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True)
    bank = datasets.ImageFolder(os.path.join(args.tiles, "train"), transform=evaluation)
    queries = datasets.ImageFolder(os.path.join(args.tiles, "test"), transform=evaluation)
    classes = len(bank.classes)

    def backbone():
        return vits.VisionTransformer(img_size=[args.global_size], patch_size=args.patch_size, embed_dim=args.embed_dim,
                                      depth=args.depth, num_heads=args.heads, mlp_ratio=4, qkv_bias=True,
                                      norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                      drop_path_rate=args.drop_path)

    def head(**kw):
        return vits.DINOHead(args.embed_dim, args.out_dim, hidden_dim=args.hidden_dim,
                             bottleneck_dim=args.bottleneck_dim, **kw)
    student = utils.MultiCropWrapper(backbone(), head(norm_last_layer=True))
    teacher = utils.MultiCropWrapper(backbone(), head())
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    random_init = copy.deepcopy(student.backbone)
    ncrops = 2 + args.local_crops
    dino_loss = main_dino.DINOLoss(args.out_dim, ncrops, args.teacher_temp, args.teacher_temp, 0, args.epochs)
    optimizer = torch.optim.AdamW(utils.get_params_groups(student))
    per_epoch = len(loader)
    lr_schedule = utils.cosine_scheduler(args.lr * args.batch_size / 256, args.min_lr, args.epochs, per_epoch,
                                         warmup_epochs=args.warmup_epochs)
    wd_schedule = utils.cosine_scheduler(args.weight_decay, args.weight_decay_end, args.epochs, per_epoch)
    momentum_schedule = utils.cosine_scheduler(args.momentum_teacher, 1, args.epochs, per_epoch)

    random_top1 = knn_top1(random_init, bank, queries, classes)
    print(f"reference DINO: {len(train)} tiles, {args.epochs} epochs x {per_epoch} iterations; "
          f"k-NN of the random init {random_top1:.1f}%", flush=True)
    it, started = 0, time.time()
    for epoch in range(args.epochs):
        student.train()
        for images, _ in loader:
            for i, group in enumerate(optimizer.param_groups):
                group["lr"] = lr_schedule[it]
                if i == 0:
                    group["weight_decay"] = wd_schedule[it]
            loss = dino_loss(student(images), teacher(images[:2]), epoch)
            optimizer.zero_grad()
            loss.backward()
            if args.clip_grad:
                utils.clip_gradients(student, args.clip_grad)
            utils.cancel_gradients_last_layer(epoch, student, args.freeze_last_layer)
            optimizer.step()
            with torch.no_grad():
                m = momentum_schedule[it]
                for ps, pt in zip(student.parameters(), teacher.parameters()):
                    pt.data.mul_(m).add_((1 - m) * ps.detach().data)
            it += 1
            if args.eval_every and it % args.eval_every == 0:
                print(f"iteration {it}: loss {loss.item():.4f}, k-NN of the teacher "
                      f"{knn_top1(teacher.backbone, bank, queries, classes):.1f}% ({time.time() - started:.0f} s)",
                      flush=True)
    print(f"k-NN top-1: random init {random_top1:.1f}% -> DINO {knn_top1(teacher.backbone, bank, queries, classes):.1f}%"
          f" (student {knn_top1(student.backbone, bank, queries, classes):.1f}%; {time.time() - started:.0f} s)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fixtures for tests/ssl/evaluation_test.cpp: DINO's k-NN classifier and linear probe.

Runs the real reference code of facebookresearch/dino, imported from a checkout given by
--dino-dir (eval_knn.py, eval_linear.py and the utils.py / vision_transformer.py they import):
  * eval_knn.knn_classifier on L2-normalised random clustered features (F.normalize, as
    eval_knn.py's extract step does) gives top-1 / top-5. It returns no predictions, so the
    per-row ranking is also computed by `ranked_classes` below, a line-for-line transcription of
    knn_classifier's loop that keeps `predictions`; the script asserts that the transcription's
    accuracies equal the reference function's before writing anything. One deliberate difference:
    equal votes (classes no neighbour voted for) are ranked by class index, where torch's default
    sort leaves them in an arbitrary order beyond 16 classes; top-1 is never affected, top-5 can
    be, so the fixture holds DINO's top-5 and the tie-ranked one.
  * eval_linear.LinearClassifier trained as eval_linear.py's train() does (SGD momentum 0.9,
    weight decay 0, CosineAnnealingLR(epochs, eta_min=0) stepped per epoch, nn.CrossEntropyLoss),
    on batches taken in order (shuffle off, so the C++ run can take the same batches); the initial
    weights are saved so the C++ probe starts from the same point.
Writes tests/fixtures/eval/{knn,linear}.safetensors (float32 features, int64 labels, float64
accuracies). Usage: python3 scripts/gen_eval_fixtures.py --dino-dir /path/to/dino
"""
import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


def clustered(n, dim, classes, spread, generator):
    """Rows near one of `classes` random centres: a k-NN task that is neither trivial nor hopeless."""
    centres = torch.randn(classes, dim, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    return centres[labels] + spread * torch.randn(n, dim, generator=generator), labels


def ranked_classes(train_features, train_labels, test_features, k, T, num_classes):
    """knn_classifier's loop (eval_knn.py), keeping the class ranking `predictions` of every row."""
    train_features = train_features.t()
    num_test_images, num_chunks = test_features.shape[0], 100
    imgs_per_chunk = num_test_images // num_chunks
    retrieval_one_hot = torch.zeros(k, num_classes)
    rankings = []
    for idx in range(0, num_test_images, imgs_per_chunk):
        features = test_features[idx: min((idx + imgs_per_chunk), num_test_images), :]
        batch_size = features.shape[0]
        similarity = torch.mm(features, train_features)
        distances, indices = similarity.topk(k, largest=True, sorted=True)
        candidates = train_labels.view(1, -1).expand(batch_size, -1)
        retrieved_neighbors = torch.gather(candidates, 1, indices)
        retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()
        retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
        distances_transform = distances.clone().div_(T).exp_()
        probs = torch.sum(torch.mul(retrieval_one_hot.view(batch_size, -1, num_classes),
                                    distances_transform.view(batch_size, -1, 1)), 1)
        _, predictions = probs.sort(1, True)
        # Not in the reference: torch's default sort orders equal votes (the zero-vote classes)
        # arbitrarily once there are more than 16 classes; the C++ side ranks them by class index,
        # a stable descending sort. The first place never ties (every neighbour's vote is > 0).
        stable = probs.sort(dim=1, descending=True, stable=True)[1]
        assert torch.equal(predictions[:, 0], stable[:, 0])
        rankings.append(stable)
    return torch.cat(rankings)


def knn_case(eval_knn, name, seed, n_train, n_test, dim, classes, spread, k, T, out):
    # train and test rows share the centres: draw them together and split
    both_x, both_y = clustered(n_train + n_test, dim, classes, spread, torch.Generator().manual_seed(seed))
    train_x, train_y = both_x[:n_train].contiguous(), both_y[:n_train].contiguous()
    test_x, test_y = both_x[n_train:].contiguous(), both_y[n_train:].contiguous()
    train_n, test_n = F.normalize(train_x, dim=1, p=2), F.normalize(test_x, dim=1, p=2)
    top1, top5 = eval_knn.knn_classifier(train_n, train_y, test_n, test_y, k, T, classes)
    ranking = ranked_classes(train_n, train_y, test_n, k, T, classes)
    correct = ranking.eq(test_y.view(-1, 1))
    mine1 = correct[:, :1].sum().item() * 100.0 / n_test
    stable_top5 = correct[:, :min(5, k)].sum().item() * 100.0 / n_test
    assert mine1 == top1, (name, mine1, top1)
    assert classes > 16 or stable_top5 == top5, (name, stable_top5, top5)  # torch sorts <= 16 stably
    print(f"knn {name}: top1 {top1:.2f} top5 {top5:.2f}, with ties ranked by class {stable_top5:.2f}"
          f" (k={k}, T={T}, {classes} classes)")
    out[f"{name}.train_features"] = train_x
    out[f"{name}.train_labels"] = train_y
    out[f"{name}.test_features"] = test_x
    out[f"{name}.test_labels"] = test_y
    out[f"{name}.ranking"] = ranking[:, :min(5, k, classes)].contiguous()
    out[f"{name}.params"] = torch.tensor([k, classes], dtype=torch.int64)
    out[f"{name}.temperature"] = torch.tensor([T], dtype=torch.float64)
    out[f"{name}.accuracy"] = torch.tensor([top1, top5, stable_top5], dtype=torch.float64)


def linear_case(eval_linear, name, seed, n, dim, classes, batch_size, epochs, lr, out):
    torch.manual_seed(seed)
    x, y = clustered(n, dim, classes, 1.5, torch.Generator().manual_seed(seed + 1))
    classifier = eval_linear.LinearClassifier(dim, num_labels=classes)  # weight ~ N(0, 0.01²), bias 0
    out[f"{name}.initial_weight"] = classifier.linear.weight.detach().clone()
    out[f"{name}.initial_bias"] = classifier.linear.bias.detach().clone()
    optimizer = torch.optim.SGD(classifier.parameters(), lr, momentum=0.9, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0)
    losses = []
    for epoch in range(epochs):  # eval_linear.py's train(): forward, CrossEntropyLoss, zero_grad, backward, step
        classifier.train()
        batch_losses = []
        for start in range(0, n, batch_size):
            inp, target = x[start:start + batch_size], y[start:start + batch_size]
            output = classifier(inp)
            loss = nn.CrossEntropyLoss()(output, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch_losses.append(loss.item())
        losses.append(sum(batch_losses) / len(batch_losses))
        scheduler.step()
    with torch.no_grad():
        accuracy = (classifier(x).argmax(1) == y).double().mean().item() * 100
    print(f"linear {name}: losses {losses[0]:.4f} -> {losses[-1]:.4f}, train accuracy {accuracy:.1f}")
    out[f"{name}.features"] = x
    out[f"{name}.labels"] = y
    out[f"{name}.params"] = torch.tensor([classes, batch_size, epochs], dtype=torch.int64)
    out[f"{name}.lr"] = torch.tensor([lr], dtype=torch.float64)
    out[f"{name}.losses"] = torch.tensor(losses, dtype=torch.float64)
    out[f"{name}.weight"] = classifier.linear.weight.detach().clone()
    out[f"{name}.bias"] = classifier.linear.bias.detach().clone()
    out[f"{name}.accuracy"] = torch.tensor([accuracy], dtype=torch.float64)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dino-dir", required=True, help="a checkout of facebookresearch/dino")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "eval"))
    args = parser.parse_args()
    sys.path.insert(0, args.dino_dir)
    import eval_knn
    import eval_linear

    os.makedirs(args.out, exist_ok=True)
    knn = {}
    knn_case(eval_knn, "clusters", 1, 400, 300, 24, 10, 1.6, 20, 0.07, knn)
    # knn_classifier takes the top min(5, k) of its ranking, so with fewer than 5 classes k must be small
    knn_case(eval_knn, "three_classes", 2, 250, 200, 8, 3, 1.2, 3, 0.2, knn)
    knn_case(eval_knn, "many_classes", 3, 300, 100, 16, 40, 0.8, 10, 0.07, knn)  # zero-vote ties in the top 5
    save_file(knn, os.path.join(args.out, "knn.safetensors"))
    linear = {}
    linear_case(eval_linear, "batches", 4, 200, 16, 4, 64, 6, 0.05, linear)  # last batch partial
    linear_case(eval_linear, "full_batch", 5, 50, 7, 3, 50, 10, 0.3, linear)
    save_file(linear, os.path.join(args.out, "linear.safetensors"))


if __name__ == "__main__":
    main()

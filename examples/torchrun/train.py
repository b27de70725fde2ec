"""A tiny DistributedDataParallel job: fit y = a*x + b on data/points.csv.

Started by torchrun on every node (examples/torchrun/job.yaml), which passes kaic's
rendezvous (KAIC_NNODES, KAIC_NODE_RANK, KAIC_MASTER_ADDR, KAIC_MASTER_PORT,
KAIC_GPUS_PER_NODE) on as torch's RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
One process per GPU (NCCL), or per CPU slot with gloo when there is no GPU.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def load(path: Path) -> TensorDataset:
    with path.open() as handle:
        rows = [(float(r["x"]), float(r["y"])) for r in csv.DictReader(handle)]
    xs = torch.tensor([[x] for x, _ in rows])
    ys = torch.tensor([[y] for _, y in rows])
    return TensorDataset(xs, ys)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("ckpt"))
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")  # reads torchrun's variables
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if rank == 0:
        print(
            f"{world} processes on {os.environ.get('KAIC_NNODES', '?')} nodes "
            f"({os.environ.get('KAIC_NODELIST', '?')}), rendezvous at "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}",
            flush=True,
        )

    data = load(args.data)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=16, sampler=sampler)
    model = DistributedDataParallel(
        torch.nn.Linear(1, 1).to(device), device_ids=[local_rank] if cuda else None
    )
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = torch.nn.MSELoss()

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        total = torch.zeros(2, device=device)  # summed loss, batches
        for xs, ys in loader:
            optimiser.zero_grad()
            loss = loss_fn(model(xs.to(device)), ys.to(device))
            loss.backward()  # DDP averages the gradients over every rank here
            optimiser.step()
            total += torch.stack([loss.detach(), torch.ones((), device=device)])
        dist.all_reduce(total)
        if rank == 0:
            print(f"epoch {epoch + 1}: loss {float(total[0] / total[1]):.4f}", flush=True)

    if rank == 0:
        weight, bias = (float(p) for p in model.module.parameters())
        print(f"fitted y = {weight:.3f} x + {bias:.3f} (the data: y = 3 x + 1)", flush=True)
        args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.module.state_dict(), args.checkpoint_dir / "linear.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

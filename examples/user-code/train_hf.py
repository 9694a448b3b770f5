"""A Hugging Face Trainer script with Cogwork: one callback (and its import) is the whole change.

    python train_hf.py --max-steps 200
    torchrun --nproc-per-node=2 train_hf.py --max-steps 200

The callback puts progress, ETA, the Trainer's logs and evaluations in the TrainJob's status,
saves a checkpoint when the operator asks (before a scale-down) and saves and stops when it
asks the job to stop (spec.stop, a pruned trial). The checkpoints are the Trainer's own, in
$COGWORK_CHECKPOINT_DIR (the job's shared volume; ./checkpoints elsewhere), and a restarted
group resumes from the newest one. A tiny BERT built from a config on synthetic data: nothing
is downloaded. The learning rate may come from the environment (LR), as a TuneJob sets it.
"""

from __future__ import annotations

import argparse
import os

import torch
from cogwork_sdk.hf import CogworkCallback  # Cogwork
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

VOCAB, LENGTH = 64, 16


class Synthetic(torch.utils.data.Dataset):
    """Random token sequences; the label is whether the first token is in the upper half."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, LENGTH), generator=gen)
        self.labels = (self.ids[:, 0] >= VOCAB // 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "labels": self.labels[i]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16, help="per device")
    parser.add_argument("--lr", type=float, default=float(os.environ.get("LR", "5e-4")))
    parser.add_argument("--save-steps", type=int, default=50)
    args = parser.parse_args()

    output_dir = os.environ.get("COGWORK_CHECKPOINT_DIR") or "./checkpoints"
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=LENGTH)
    training_args = TrainingArguments(
        output_dir=output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.lr,
        logging_steps=10,
        eval_strategy="steps",
        eval_steps=50,
        save_steps=args.save_steps,
        save_total_limit=3,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),  # without it, CPU ranks under torchrun don't DDP
        ddp_find_unused_parameters=False,
        seed=0,
    )
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=training_args,
        train_dataset=Synthetic(4096, seed=1),
        eval_dataset=Synthetic(512, seed=2),
        callbacks=[CogworkCallback()],
    )
    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    trainer.train(resume_from_checkpoint=last)


if __name__ == "__main__":
    main()

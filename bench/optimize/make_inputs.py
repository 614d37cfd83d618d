"""Make the benchmark's real inputs; runs in the bench-only venv (numpy, pillow, tokenizers).

  tokens: tokenize bench/optimize/sentences.txt with the bert-base-uncased WordPiece vocab
          (the vocab paraphrase-MiniLM-L3-v2 was trained with) → input_ids/attention_mask .npz
  images: render text-like document images (dark words on light, varied paper) → PP-OCR
          detection inputs, normalized as PP-OCR does (ImageNet mean/std), NCHW float32 .npz
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def tokens(args: argparse.Namespace) -> None:
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(args.vocab, lowercase=True)
    sentences = [s.strip() for s in Path(args.sentences).read_text().splitlines() if s.strip()]
    encoded = tok.encode_batch(sentences)
    length = max(len(e.ids) for e in encoded)
    ids = np.zeros((len(sentences), length), np.int64)
    mask = np.zeros((len(sentences), length), np.int64)
    for i, e in enumerate(encoded):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    np.savez(args.out, input_ids=ids, attention_mask=mask)
    print(f"{len(sentences)} sentences, padded to {length} tokens -> {args.out}")


def _page(rng: random.Random, words: list[str], height: int, width: int):  # noqa: ANN202
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    base = rng.randint(175, 255)
    paper = np.full((height, width, 3), base, np.float32)
    tint = np.array([rng.randint(-20, 10) for _ in range(3)], np.float32)
    ramp = np.linspace(0, rng.uniform(-40, 25), width, dtype=np.float32)[None, :, None]
    paper = paper + tint + ramp + np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(1, 8),
                                                                                          paper.shape)
    img = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    y = rng.randint(4, 40)
    while y < height - 20:
        size = rng.randint(12, 42)
        font = ImageFont.load_default(size=size)
        x = rng.randint(4, width // 3)
        line = " ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))
        ink = tuple(rng.randint(0, 90) for _ in range(3))
        if rng.random() < 0.15:
            ink = (rng.randint(0, 60), rng.randint(0, 60), rng.randint(90, 160))  # blue pen
        draw.text((x, y), line, fill=ink, font=font)
        y += int(size * rng.uniform(1.3, 2.6))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.3:
        img = img.rotate(rng.uniform(-4, 4), expand=False, fillcolor=(base, base, base))
    return img


def images(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    words = Path(args.sentences).read_text().split()
    out = np.empty((args.count, 3, args.height, args.width), np.float32)
    for i in range(args.count):
        page = np.asarray(_page(rng, words, args.height, args.width), np.float32) / 255.0
        out[i] = ((page - MEAN) / STD).transpose(2, 0, 1)
    np.savez(args.out, x=out)
    if args.preview:
        from PIL import Image

        rgb = np.clip((out[0].transpose(1, 2, 0) * STD + MEAN) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(args.preview)
    print(f"{args.count} images {args.height}x{args.width} (seed {args.seed}) -> {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(required=True)
    t = sub.add_parser("tokens")
    t.add_argument("--vocab", required=True)
    t.add_argument("--sentences", required=True)
    t.add_argument("--out", required=True)
    t.set_defaults(func=tokens)
    i = sub.add_parser("images")
    i.add_argument("--sentences", required=True)
    i.add_argument("--out", required=True)
    i.add_argument("--count", type=int, default=64)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--height", type=int, default=480)
    i.add_argument("--width", type=int, default=640)
    i.add_argument("--preview", help="save the first image as PNG")
    i.set_defaults(func=images)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

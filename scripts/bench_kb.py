"""Knowledge-base benchmark: indexing speed, incremental rescans, search latency, retrieval quality.

    python scripts/bench_kb.py [--documents 200] [--threads 2] [--json out.json]

Builds a synthetic corpus (half English, half Chinese maintenance and policy documents, each with one unique
fact), indexes it, rescans it unchanged and with one file changed, times questions, and checks on the shipped
samples and the synthetic corpus that each question's own document comes first (hit@1) and that small talk
retrieves nothing (false positives).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import percentile  # noqa: E402
from connector.skills.knowledge_base import SAMPLES, KnowledgeBaseConfig  # noqa: E402
from connector.skills.knowledge_base.embedder import Embedder  # noqa: E402
from connector.skills.knowledge_base.index import VectorIndex  # noqa: E402

MACHINES_EN = ["lathe", "milling machine", "hydraulic press", "conveyor", "compressor", "welding robot", "boiler",
               "chiller", "forklift", "paint booth"]
MACHINES_ZH = ["车床", "铣床", "液压机", "传送带", "空压机", "焊接机器人", "锅炉", "冷水机", "叉车", "喷漆房"]
FILLER_EN = ("Operators must wear safety glasses and gloves. Report any abnormal noise to the shift leader. "
             "Keep the area around the machine clear of tools and offcuts. ")
FILLER_ZH = "操作人员必须佩戴护目镜和手套。发现异常噪音应立即报告班组长。机器周围应保持整洁，不得堆放工具和边角料。"
SAMPLE_QUESTIONS = [
    ("How often must the HP-400 hydraulic press be recalibrated?", "meridian-maintenance-handbook.pdf"),
    ("Which extension do I call if the pressure gauge is off?", "meridian-maintenance-handbook.pdf"),
    ("出差住宿每晚的报销上限是多少？", "华东工厂差旅报销制度.docx"),
    ("报销单须在出差结束后几个工作日内提交？", "华东工厂差旅报销制度.docx"),
    ("食堂几点开早餐？", "食堂与班车通知.txt"), ("班车几点出发？", "食堂与班车通知.txt"),
    ("What are the printer names on the second floor?", "it-helpdesk-faq.md"),
    ("How often do passwords expire?", "it-helpdesk-faq.md"),
]
SMALL_TALK = ["What is the capital of France?", "Tell me a joke", "hello", "What is 2+2?", "Write a haiku about rain",
              "你好", "今天天气怎么样？", "给我讲个笑话", "帮我写一首关于大海的诗", "中国的首都是哪里？", "谢谢", "你是谁？"]


def corpus(folder: Path, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """n documents, each with one unique fact; returns (question, file name) pairs."""
    questions = []
    for i in range(n):
        code = f"{chr(65 + i % 26)}{chr(65 + (i // 26) % 26)}-{100 + i}"
        hours = rng.randrange(100, 2000, 10)
        if i % 2 == 0:
            machine = MACHINES_EN[i % len(MACHINES_EN)]
            name = f"manual-{code}.md"
            fact = f"The {machine} {code} must be serviced every {hours} operating hours."
            body = f"# {machine.title()} {code} manual\n\n" + FILLER_EN * 6 + "\n\n" + fact + "\n\n" + FILLER_EN * 6
            questions.append((f"How often must the {machine} {code} be serviced?", name))
        else:
            machine = MACHINES_ZH[i % len(MACHINES_ZH)]
            name = f"规程-{code}.txt"
            fact = f"{machine}{code}每运行{hours}小时必须保养一次。"
            body = f"{machine}{code}操作规程\n\n" + FILLER_ZH * 6 + "\n\n" + fact + "\n\n" + FILLER_ZH * 6
            questions.append((f"{machine}{code}多久需要保养一次？", name))
        (folder / name).write_text(body, encoding="utf-8")
    return questions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    config = KnowledgeBaseConfig()
    search_args = (config.top_k, config.min_score, config.score_margin, config.min_lift)
    embedder = Embedder(threads=args.threads)
    results: dict = {"documents": args.documents, "threads": args.threads, "model": embedder.model_id}
    with tempfile.TemporaryDirectory() as tmp:
        folder, index_dir = Path(tmp) / "docs", Path(tmp) / "index"
        folder.mkdir()
        questions = corpus(folder, args.documents, random.Random(7))
        index = VectorIndex(folder, index_dir, embedder, chunk_chars=config.chunk_chars,
                            chunk_overlap=config.chunk_overlap)
        report = index.scan()
        results["index_s"] = round(report.seconds, 2)
        results["chunks"] = index.size[1]
        results["chunks_per_s"] = round(report.chunks_embedded / report.seconds, 1)
        results["rescan_unchanged_s"] = round(index.scan().seconds, 3)
        changed = folder / questions[0][1]
        changed.write_text(changed.read_text(encoding="utf-8") + "\n\nRevised 2026-11.", encoding="utf-8")
        again = index.scan()
        results["rescan_one_changed_s"] = round(again.seconds, 3)
        results["rescan_one_changed_chunks"] = again.chunks_embedded
        index.search("warm-up", *search_args)
        latencies, hits = [], 0
        for question, name in questions:
            started = time.perf_counter()
            found = index.search(question, *search_args)
            latencies.append((time.perf_counter() - started) * 1000)
            hits += bool(found) and found[0].path == name
        results["search_ms_p50"] = round(statistics.median(latencies), 1)
        results["search_ms_p99"] = round(percentile(latencies, 99), 1)
        results["synthetic_hit_at_1"] = f"{hits}/{len(questions)}"
        # questions while another index of the folder is being built (the model is shared between them)
        import threading

        builder = VectorIndex(folder, Path(tmp) / "index2", embedder, chunk_chars=config.chunk_chars,
                              chunk_overlap=config.chunk_overlap)
        worker = threading.Thread(target=builder.scan)
        worker.start()
        busy = []
        for question, _ in questions[:20]:
            started = time.perf_counter()
            index.search(question, *search_args)
            busy.append((time.perf_counter() - started) * 1000)
        worker.join()
        results["search_during_indexing_ms_p50"] = round(statistics.median(busy), 1)
        results["search_during_indexing_ms_max"] = round(max(busy), 1)
        results["synthetic_small_talk_false_positives"] = (
            f"{sum(bool(index.search(q, *search_args)) for q in SMALL_TALK)}/{len(SMALL_TALK)}")
        samples = VectorIndex(SAMPLES, Path(tmp) / "samples-index", embedder)
        samples.scan()
        sample_hits = [(q, [h.path for h in samples.search(q, *search_args)]) for q, _ in SAMPLE_QUESTIONS]
        results["samples_hit_at_1"] = (
            f"{sum(bool(f) and f[0] == want for (_, f), (_, want) in zip(sample_hits, SAMPLE_QUESTIONS))}"
            f"/{len(SAMPLE_QUESTIONS)}")
        results["samples_small_talk_false_positives"] = (
            f"{sum(bool(samples.search(q, *search_args)) for q in SMALL_TALK)}/{len(SMALL_TALK)}")
        results["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for key, value in results.items():
        print(f"{key:>38}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

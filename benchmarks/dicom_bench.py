"""C-STORE throughput of the DICOM listener, as a ratio to a bare pynetdicom receiver (#6).

    .venv/bin/python -m benchmarks.dicom_bench            # 200 CT instances, 2 repeats
    .venv/bin/python -m benchmarks.dicom_bench --quick    # 40 instances, 1 repeat

Two receivers run side by side, each in a process of its own:

- **bare**: a pynetdicom AE (CT Image Storage, the same pynetdicom defaults) whose
  C-STORE handler only writes the received data set to a file, nothing else;
- **kyphofhir**: ``kyphofhir dicom`` exactly as deployed: structure check, parse, Part 10
  file written to a temporary name, fsynced, renamed, folder fsynced, then the FHIR
  indexing (``services.imaging.ingest``: ImagingStudy, Patient, Endpoint) in one database
  transaction, all before the C-STORE response.

dcmtk's ``storescu`` sends a fresh study of CT-sized instances (512 x 512, 16-bit,
explicit VR little endian, ~0.5 MB each) to each receiver, with 1 association (one
``storescu`` for all files) and with 4 (the files split over 4 ``storescu`` processes),
with ``TCP_NODELAY=1`` in dcmtk's environment and without. Runs alternate between the
receivers; the best of ``--repeat`` runs counts (the machine is shared). After each
kyphofhir run the time from the last C-STORE response (the last ``storescu`` exiting) to
an ImagingStudy that lists every instance is measured with FHIR searches.

Results: a table on stdout and ``benchmarks/results/dicom-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 0.8
TARGET_COMPLETE_S = 1.0


# --------------------------------------------------------------------------- data


def make_study(folder: Path, count: int, seed: int) -> tuple[str, list[Path]]:
    """``count`` CT instances of one new study (one series) as Part 10 files."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study, series = generate_uid(), generate_uid()
    pixels = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16).tobytes()
    paths = []
    for number in range(1, count + 1):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientID = f"BENCH-{seed}"
        ds.PatientName = "Bench^Dicom"
        ds.PatientBirthDate = "19480502"
        ds.PatientSex = "F"
        ds.StudyDate = "20240305"
        ds.StudyTime = "101500"
        ds.AccessionNumber = f"ACC{seed}"
        ds.Modality = "CT"
        ds.BodyPartExamined = "LSPINE"
        ds.SeriesNumber = 1
        ds.InstanceNumber = number
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = pixels
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{number:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study, paths


# --------------------------------------------------------------------------- receivers


def bare_receiver(port: int, out: Path) -> None:
    """The baseline: pynetdicom writes each data set to a file and answers success."""
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage

    out.mkdir(parents=True, exist_ok=True)

    def handle_store(event: Any) -> int:
        with open(out / f"{event.request.AffectedSOPInstanceUID}.dcm", "wb") as f:
            f.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(f, event.file_meta)  # type: ignore[arg-type]
            f.write(event.request.DataSet.getvalue())
        return 0x0000

    ae = AE(ae_title="BARE")
    ae.maximum_associations = 16
    ae.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"bare receiver on {port}", flush=True)
    ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, handle_store)])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_log(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"receiver did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


# --------------------------------------------------------------------------- sending


def storescu(
    files: list[Path], port: int, ae_title: str, associations: int, nodelay: bool
) -> float:
    """Send ``files`` split over ``associations`` storescu processes; wall seconds."""
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    chunks = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", ae_title, "127.0.0.1", str(port), *map(str, chunk)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    failed = []
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            failed.append(err.decode(errors="replace")[-500:])
    elapsed = time.perf_counter() - start
    if failed:
        raise RuntimeError("storescu failed: " + " | ".join(failed))
    return elapsed


# --------------------------------------------------------------------------- run


@dataclass
class Run:
    receiver: str
    associations: int
    nodelay: bool
    instances: int
    megabytes: float
    seconds: float
    complete_after_s: float | None = None

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    @property
    def mbps(self) -> float:
        return self.megabytes / self.seconds


def study_complete_after(svc: Any, study: str, expected: int, timeout: float = 30) -> float:
    """Seconds until ``ImagingStudy?identifier=urn:dicom:uid|urn:oid:<study>`` lists every
    instance (the listener indexes before answering, so this is the query time)."""
    from kyphofhir.services.search import search

    start = time.perf_counter()
    while True:
        result = svc.run(
            False,
            lambda uow: search(
                svc,
                uow,
                "ImagingStudy",
                [("identifier", f"urn:dicom:uid|urn:oid:{study}")],
                snapshot=False,
            ),
        )
        for stored in result.page.items:
            body = json.loads(stored.text or "{}")
            if body.get("numberOfInstances") == expected:
                return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"ImagingStudy of {study} incomplete after {timeout} s")
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="40 instances, 1 repeat")
    parser.add_argument("--db", default="", help="SQLAlchemy URL (default: a fresh SQLite file)")
    parser.add_argument("--bare-receiver", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_receiver:
        bare_receiver(int(args.bare_receiver[0]), Path(args.bare_receiver[1]))
        return 0
    if shutil.which("storescu") is None:
        print("dcmtk's storescu is needed (apt-get install dcmtk)", file=sys.stderr)
        return 1
    count, repeat = (40, 1) if args.quick else (args.instances, args.repeat)

    from kyphofhir.app import build_services
    from kyphofhir.config import Settings
    from kyphofhir.store.sql.engine import make_engine
    from kyphofhir.store.sql.migrate import upgrade

    tmp = Path(tempfile.mkdtemp(prefix="kf_dicom_bench_"))
    procs: list[subprocess.Popen[bytes]] = []
    runs: list[Run] = []
    try:
        db = args.db or f"sqlite:///{tmp / 'bench.sqlite3'}"
        engine = make_engine(db)
        upgrade(engine)
        engine.dispose()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KYPHOFHIR_")}
        env.update(
            {
                "KYPHOFHIR_DB": db,
                "KYPHOFHIR_DATA_DIR": str(tmp / "kyphofhir"),
                "KYPHOFHIR_LOG_LEVEL": "WARNING",
                "KYPHOFHIR_HOST": "127.0.0.1",
            }
        )
        ports = {"bare": free_port(), "kyphofhir": free_port()}
        logs = {name: tmp / f"{name}.log" for name in ports}
        with logs["bare"].open("wb") as out:
            bare = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.dicom_bench", "--bare-receiver",
                 str(ports["bare"]), str(tmp / "bare")],
                stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
            )  # fmt: skip
        procs.append(bare)
        with logs["kyphofhir"].open("wb") as out:
            ours = subprocess.Popen(
                [sys.executable, "-m", "kyphofhir", "dicom", "--port", str(ports["kyphofhir"]),
                 "--log-level", "INFO"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(ours)
        wait_for_log(logs["bare"], "bare receiver on", bare)
        wait_for_log(logs["kyphofhir"], "(allowed", ours)
        svc = build_services(Settings.load({"db": db, "auto_migrate": False}, environ={}))
        titles = {"bare": "BARE", "kyphofhir": "KYPHOFHIR"}
        seed = 0
        for nodelay in (True, False):
            for associations in (1, 4):
                for rep in range(repeat):
                    for receiver in ("bare", "kyphofhir"):
                        seed += 1
                        study, files = make_study(tmp / "in" / str(seed), count, seed)
                        megabytes = sum(p.stat().st_size for p in files) / 1e6
                        seconds = storescu(
                            files, ports[receiver], titles[receiver], associations, nodelay
                        )
                        run = Run(receiver, associations, nodelay, count, megabytes, seconds)
                        if receiver == "kyphofhir":
                            run.complete_after_s = study_complete_after(svc, study, count)
                        runs.append(run)
                        shutil.rmtree(tmp / "in" / str(seed))
                        print(
                            f"  {receiver:9} assoc={associations} nodelay={nodelay!s:5} "
                            f"rep={rep + 1}: {run.rate:6.1f} inst/s {run.mbps:6.1f} MB/s"
                            + (
                                f"  complete +{run.complete_after_s * 1000:.0f} ms"
                                if run.complete_after_s is not None
                                else ""
                            ),
                            flush=True,
                        )
        svc.store.dispose()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return report(runs, count, repeat, args.db or "sqlite")


def best(runs: list[Run], receiver: str, associations: int, nodelay: bool) -> Run:
    """The fastest of the repeated runs of one configuration."""
    return max(
        (
            r
            for r in runs
            if r.receiver == receiver and r.associations == associations and r.nodelay == nodelay
        ),
        key=lambda r: r.rate,
    )


def report(runs: list[Run], count: int, repeat: int, db: str) -> int:
    print()
    print(
        f"{count} CT instances (512x512, 16-bit), best of {repeat}; database: {db.split('@')[-1]}"
    )
    print(
        f"{'TCP_NODELAY':11} {'assoc':>5} {'bare inst/s':>11} {'MB/s':>6} "
        f"{'kyphofhir inst/s':>16} {'MB/s':>6} {'ratio':>6} {'complete':>9}"
    )
    summary = []
    ok = True
    for nodelay in (True, False):
        for associations in (1, 4):
            bare = best(runs, "bare", associations, nodelay)
            ours = best(runs, "kyphofhir", associations, nodelay)
            ratio = ours.rate / bare.rate
            complete = max(
                r.complete_after_s or 0.0
                for r in runs
                if r.receiver == "kyphofhir" and r.associations == associations
                and r.nodelay == nodelay
            )  # fmt: skip
            if nodelay:
                ok = ok and ratio >= TARGET_RATIO and complete < TARGET_COMPLETE_S
            print(
                f"{'1' if nodelay else 'unset':11} {associations:5} {bare.rate:11.1f} "
                f"{bare.mbps:6.1f} {ours.rate:16.1f} {ours.mbps:6.1f} {ratio:6.2f} "
                f"{complete * 1000:7.0f}ms"
            )
            summary.append(
                {
                    "tcp_nodelay": nodelay,
                    "associations": associations,
                    "bare": asdict(bare),
                    "kyphofhir": asdict(ours),
                    "ratio": ratio,
                    "complete_after_s": complete,
                }
            )
    print(
        f"target: ratio >= {TARGET_RATIO} and complete ImagingStudy < {TARGET_COMPLETE_S:.0f} s "
        f"(with TCP_NODELAY=1): {'met' if ok else 'MISSED'}"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"dicom-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"runs": [asdict(r) for r in runs], "summary": summary}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

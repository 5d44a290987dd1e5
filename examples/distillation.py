"""Distil the digits CNN into a SqueezeNet-style student 15x smaller.

The teacher is the default CNN (151k parameters). The student
(``make_digits_net(arch="squeeze")``, about 10k parameters, Fire modules and
no linear layer) is trained twice for the same epochs: on the labels alone
(``alpha=0``, which is plain training) and by :class:`skcompress.Distiller`
on the teacher's softened outputs (temperature 4, ``alpha=0.9``). The
distilled student is saved in the compact format. Writes
``digits_student.skc`` in the current folder.

Run: ``python examples/distillation.py`` (about 40 s on 2 CPU cores).
``SKCOMPRESS_EXAMPLE_QUICK=1`` (set by the smoke test) trains both nets for
fewer epochs on part of the data.
"""

import os

import torch
from sklearn.model_selection import train_test_split

from skcompress import Distiller, load, save
from skcompress.accounting import count_parameters
from skcompress.datasets import load_digits_images
from skcompress.models import make_digits_net

QUICK = os.environ.get("SKCOMPRESS_EXAMPLE_QUICK") == "1"
torch.set_num_threads(1)  # small nets: one thread is fastest

X, y = load_digits_images()
if QUICK:
    X, y = X[:600], y[:600]
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y,
                                      random_state=0)
teacher = make_digits_net(random_state=0, max_epochs=10 if QUICK else 30)
teacher.fit(Xtr, ytr)

epochs = 10 if QUICK else 20
scores = {}
for name, alpha in (("plain", 0.0), ("distilled", 0.9)):
    student = make_digits_net(random_state=0, arch="squeeze", max_epochs=epochs)
    distiller = Distiller(student, teacher=teacher, temperature=4.0, alpha=alpha,
                          random_state=0).fit(Xtr, ytr)
    scores[name] = distiller.score(Xte, yte)

teacher_params = count_parameters(teacher.module_)
student_params = count_parameters(distiller.estimator_.module_)
print(f"teacher CNN       : {teacher_params:>7} parameters, "
      f"accuracy {teacher.score(Xte, yte):.4f}")
print(f"student, plain    : {student_params:>7} parameters, "
      f"accuracy {scores['plain']:.4f} ({epochs} epochs on the labels)")
print(f"student, distilled: {student_params:>7} parameters, "
      f"accuracy {scores['distilled']:.4f} ({epochs} epochs, T=4, alpha=0.9)")

path = "digits_student.skc"
n_bytes = save(distiller, path)
assert n_bytes == os.path.getsize(path) == distiller.size_bytes_
assert (load(path).predict(Xte) == distiller.predict(Xte)).all()
print(f"wrote {path}: {n_bytes} bytes, {distiller.compression_ratio_:.1f}x smaller "
      f"than the teacher's {distiller.original_size_bytes_} fp32 bytes")

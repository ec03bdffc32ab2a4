"""A two-split TFDS dataset built locally, to test `tfds:NAME` loading offline.

It lives in a package because TFDS looks up resources next to the builder's module.
"""

import tensorflow_datasets as tfds


class TinyReviews(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "sentence": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(num_classes=2),
                }
            )
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(6),
            "validation": self._generate_examples(2),
        }

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"sentence": f"review number {i}", "label": i % 2}

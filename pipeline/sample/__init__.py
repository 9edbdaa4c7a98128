"""The embedded bilingual synthetic sample: scenes of coloured shapes with parallel EN / PT-PT captions,
written in the real source formats (CC3M TSV, COCO Karpathy JSON, VisDial v1.0 JSON)."""

"""Translation library: engines (DeepL, CTranslate2 MADLAD/Narrativa, HF), translation memory,
quality flags and token statistics. Plain library: never imports luigi or pipeline."""

"""Analysis: the runtime's eyes and ears. One module per signal, each turning media into parts of a
`features.observations.CameraObservation`; `engine.AnalysisEngine` schedules them on the tick clock.

    people.py   YOLO (batched over cameras) + one ByteTrack state per camera
    faces.py    face detector backends (OpenCV Haar offline default; a YOLO face model when configured)
    motion.py   frame-difference motion energy
    audio.py    level (dBFS) and Silero VAD speech probability
    asr.py      faster-whisper on a sliding window: words with times, keywords, words/s, safe cut points
    vlm.py      a transformers image-text model at its own cadence, strict-JSON reads
    engine.py   latest-frame slots, the per-tick pass, staleness, degradation, per-stage latency
"""

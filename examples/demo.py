"""The main job on the bundled default: load the real all-mpnet-base-v2 and compare sentences."""
import sentembed

model = sentembed.load("all-mpnet-base-v2")
print(model)
sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "A man is riding a horse.", "A woman is playing violin."]
vectors = model.encode(sentences)
print("embeddings:", vectors.shape, vectors[:, :4].round(4).tolist())
scores = model.similarity(vectors, vectors)
for sentence, row in zip(sentences, scores):
    print(f"{sentence:<36}", " ".join(f"{s:5.2f}" for s in row))

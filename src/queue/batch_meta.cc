// BatchMeta selection, chunking and concatenation.
#include "tq/batch_meta.h"

#include <map>

namespace tq {

std::vector<int64_t> BatchMeta::global_indexes() const {
  std::vector<int64_t> out;
  out.reserve(samples_.size());
  for (const auto& s : samples_) out.push_back(s.global_index);
  return out;
}

std::vector<std::string> BatchMeta::partition_ids() const {
  std::vector<std::string> out;
  out.reserve(samples_.size());
  for (const auto& s : samples_) out.push_back(s.partition_id);
  return out;
}

int BatchMeta::FieldIndex(const std::string& name) const {
  for (size_t i = 0; i < field_names_.size(); ++i) {
    if (field_names_[i] == name) return static_cast<int>(i);
  }
  return -1;
}

std::vector<FieldSchema> BatchMeta::schema() const {
  std::vector<FieldSchema> out;
  for (size_t f = 0; f < field_names_.size(); ++f) {
    FieldSchema s;
    s.name = field_names_[f];
    s.produced = !samples_.empty();
    bool first = true;
    for (const auto& sm : samples_) {
      if (f >= sm.fields.size() || !sm.fields[f].produced) {
        s.produced = false;
        continue;
      }
      const FieldInfo& fi = sm.fields[f];
      if (first) {
        s.kind = fi.kind;
        s.dtype = fi.dtype;
        s.shape = fi.shape;
        first = false;
      } else if (fi.kind != s.kind || fi.dtype != s.dtype || fi.shape != s.shape) {
        s.ragged = true;
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

Result<BatchMeta> BatchMeta::SelectSamples(const std::vector<size_t>& positions) const {
  std::vector<SampleMeta> out;
  out.reserve(positions.size());
  for (size_t p : positions) {
    if (p >= samples_.size()) {
      return Status::Invalid("sample position ", p, " out of range for a meta of ", samples_.size());
    }
    out.push_back(samples_[p]);
  }
  return BatchMeta(field_names_, std::move(out));
}

Result<BatchMeta> BatchMeta::SelectFields(const std::vector<std::string>& names) const {
  std::vector<int> idx;
  for (const auto& n : names) {
    int i = FieldIndex(n);
    if (i < 0) return Status::NotFound("meta has no field '", n, "'");
    idx.push_back(i);
  }
  std::vector<SampleMeta> out = samples_;
  for (auto& s : out) {
    FieldInfos f;
    f.reserve(idx.size());
    for (int i : idx) f.push_back(static_cast<size_t>(i) < s.fields.size() ? s.fields[i] : FieldInfo{});
    s.fields = std::move(f);
  }
  return BatchMeta(names, std::move(out));
}

std::vector<BatchMeta> BatchMeta::Chunk(size_t chunks) const {
  std::vector<BatchMeta> out;
  if (chunks == 0) return out;
  size_t base = samples_.size() / chunks, extra = samples_.size() % chunks, start = 0;
  for (size_t c = 0; c < chunks; ++c) {
    size_t n = base + (c < extra ? 1 : 0);
    out.emplace_back(field_names_, std::vector<SampleMeta>(samples_.begin() + start,
                                                           samples_.begin() + start + n));
    start += n;
  }
  return out;
}

BatchMeta BatchMeta::Concat(const std::vector<BatchMeta>& metas) {
  std::vector<std::string> names;
  std::map<std::string, size_t> pos;
  for (const auto& m : metas) {
    for (const auto& n : m.field_names_) {
      if (pos.emplace(n, names.size()).second) names.push_back(n);
    }
  }
  std::vector<SampleMeta> out;
  for (const auto& m : metas) {
    for (const auto& s : m.samples_) {
      SampleMeta c = s;
      c.fields.assign(names.size(), FieldInfo{});
      for (size_t f = 0; f < m.field_names_.size() && f < s.fields.size(); ++f) {
        c.fields[pos[m.field_names_[f]]] = s.fields[f];
      }
      out.push_back(std::move(c));
    }
  }
  return BatchMeta(std::move(names), std::move(out));
}

Result<BatchMeta> BatchMeta::Union(const BatchMeta& a, const BatchMeta& b) {
  if (a.size() != b.size()) {
    return Status::Invalid("union of BatchMetas of ", a.size(), " and ", b.size(), " samples");
  }
  for (size_t i = 0; i < a.size(); ++i) {
    const SampleMeta& x = a.samples_[i];
    const SampleMeta& y = b.samples_[i];
    if (x.global_index != y.global_index || x.generation != y.generation || x.partition_id != y.partition_id) {
      return Status::Invalid("union of BatchMetas of other samples: position ", i, " holds sample ", x.global_index,
                             " of '", x.partition_id, "' and sample ", y.global_index, " of '", y.partition_id, "'");
    }
  }
  std::vector<std::string> names = a.field_names_;
  std::vector<int> from_b(b.field_names_.size());
  for (size_t f = 0; f < b.field_names_.size(); ++f) {
    int i = a.FieldIndex(b.field_names_[f]);
    if (i < 0) {
      i = static_cast<int>(names.size());
      names.push_back(b.field_names_[f]);
    }
    from_b[f] = i;
  }
  std::vector<SampleMeta> out = a.samples_;
  for (size_t s = 0; s < out.size(); ++s) {
    out[s].fields.resize(names.size());
    const auto& bf = b.samples_[s].fields;
    for (size_t f = 0; f < bf.size() && f < from_b.size(); ++f) out[s].fields[from_b[f]] = bf[f];
  }
  return BatchMeta(std::move(names), std::move(out));
}

}  // namespace tq

//! Python bindings: the extension module `pyalign._core`.
//!
//! Each entry point converts its arguments to owned Rust values, releases the interpreter
//! lock for the work (reading, tokenizing, batching) and converts the result back, with token
//! data as numpy arrays rather than per-token Python objects. The tokenizing loops run on
//! rayon's global thread pool, so a call uses every core unless `RAYON_NUM_THREADS` sets
//! another number of threads. Rust `log` records reach Python's `logging` through pyo3-log,
//! under logger names that follow the module path (`pyalign.batch`, `pyalign.hh_rlhf`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1};
use pyo3::exceptions::{
    PyFileNotFoundError, PyKeyError, PyOSError, PyPermissionError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::batch::{
    check_indices, Batch, LengthLimits, PaddingSide, PairDataset, PromptDataset, ResponseDataset,
    TruncationMode,
};
use crate::batch_order::{padding_fraction, BatchOrderOptions, RecordSize};
use crate::chat::ChatTemplate;
use crate::error::Error;
use crate::hh_rlhf::{self, ConvertOptions, OutputFormat, PromptMode};
use crate::table;
use crate::table_writer::{self, ColumnValues};
use crate::tokenize::{SpecialToken, SpecialTokens, TextTokenizer};

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        let message = error.to_string();
        match &error {
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
                std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
                // flate2 reports a corrupt or truncated gzip stream with these kinds. The file
                // was readable, so its content is the bad value.
                std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::UnexpectedEof => PyValueError::new_err(message),
                _ => PyOSError::new_err(message),
            },
            Error::MissingColumn { .. } | Error::MissingToken { .. } => {
                PyKeyError::new_err(message)
            }
            Error::WrongType { .. } => PyTypeError::new_err(message),
            Error::Empty { .. }
            | Error::UnsupportedExtension { .. }
            | Error::InvalidUtf8 { .. }
            | Error::InvalidJson { .. }
            | Error::InvalidCsv { .. }
            | Error::InvalidParquet { .. }
            | Error::InvalidRecord { .. }
            | Error::ChatTemplate { .. }
            | Error::Tokenizer { .. }
            | Error::InvalidValue { .. } => PyValueError::new_err(message),
        }
    }
}

/// Converts a count or length from Python, where a negative value is a bad value rather than
/// an overflow.
fn to_usize(name: &'static str, value: i64) -> Result<usize, Error> {
    usize::try_from(value).map_err(|_| Error::invalid_value(name, value, "a non-negative integer"))
}

/// A special token argument of `Tokenizer.__init__`: omitted, `None`, or a token string.
struct TokenArgument(SpecialToken);

impl<'a, 'py> FromPyObject<'a, 'py> for TokenArgument {
    type Error = PyErr;

    fn extract(object: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if object.is_none() {
            return Ok(TokenArgument(SpecialToken::Absent));
        }
        match object.extract::<String>() {
            Ok(token) => Ok(TokenArgument(SpecialToken::Token(token))),
            Err(_) => Err(PyTypeError::new_err(format!(
                "a special token must be a string or None, found {}",
                object.get_type().name()?
            ))),
        }
    }
}

const FROM_CONFIG: TokenArgument = TokenArgument(SpecialToken::FromConfig);

#[pyclass(name = "Tokenizer", module = "pyalign._core", frozen)]
struct PyTokenizer {
    inner: Arc<TextTokenizer>,
    path: PathBuf,
}

#[pymethods]
impl PyTokenizer {
    #[new]
    #[pyo3(signature = (
        path, bos_token = FROM_CONFIG, eos_token = FROM_CONFIG, pad_token = FROM_CONFIG
    ))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        bos_token: TokenArgument,
        eos_token: TokenArgument,
        pad_token: TokenArgument,
    ) -> PyResult<Self> {
        let special_tokens = SpecialTokens {
            bos: bos_token.0,
            eos: eos_token.0,
            pad: pad_token.0,
        };
        let inner = py.detach(|| TextTokenizer::from_path(&path, &special_tokens))?;
        Ok(PyTokenizer {
            inner: Arc::new(inner),
            path,
        })
    }

    #[getter]
    fn bos_token_id(&self) -> Option<u32> {
        self.inner.bos_token_id()
    }

    #[getter]
    fn eos_token_id(&self) -> Option<u32> {
        self.inner.eos_token_id()
    }

    #[getter]
    fn pad_token_id(&self) -> u32 {
        self.inner.pad_token_id()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    #[pyo3(signature = (text, add_special_tokens = true))]
    fn encode(&self, py: Python<'_>, text: String, add_special_tokens: bool) -> PyResult<Vec<u32>> {
        Ok(py.detach(|| self.inner.encode(&text, add_special_tokens))?)
    }

    #[pyo3(signature = (ids, skip_special_tokens = true))]
    fn decode(&self, py: Python<'_>, ids: Vec<i64>, skip_special_tokens: bool) -> PyResult<String> {
        let ids = ids
            .into_iter()
            .map(|id| {
                u32::try_from(id)
                    .map_err(|_| Error::invalid_value("token id", id, "an id in the vocabulary"))
            })
            .collect::<Result<Vec<u32>, Error>>()?;
        Ok(py.detach(|| self.inner.decode(&ids, skip_special_tokens))?)
    }

    /// The tokenizer's own chat template text, or None when it has none.
    #[getter]
    fn chat_template(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let found = py.detach(|| crate::chat::find_template_source(self.inner.path()))?;
        Ok(found.map(|(source, _)| source))
    }

    #[pyo3(signature = (conversation, add_generation_prompt = true, chat_template = None))]
    fn apply_chat_template(
        &self,
        py: Python<'_>,
        conversation: &Bound<'_, PyAny>,
        add_generation_prompt: bool,
        chat_template: Option<String>,
    ) -> PyResult<String> {
        let conversation = conversation_text(conversation)?;
        let rendered = py.detach(|| -> Result<String, Error> {
            let template = self.inner.chat_template(chat_template.as_deref())?;
            match crate::chat::parse_conversation(&conversation) {
                Some(messages) => template.render(&messages, add_generation_prompt),
                None if add_generation_prompt => template.render_prompt(&conversation),
                None => {
                    let message = serde_json::json!({"role": "user", "content": conversation});
                    template.render(&[message], false)
                }
            }
        })?;
        Ok(rendered)
    }

    fn __repr__(&self) -> String {
        let python_id = |id: Option<u32>| id.map_or("None".to_owned(), |id| id.to_string());
        format!(
            "Tokenizer({:?}, vocab_size={}, bos_token_id={}, eos_token_id={}, pad_token_id={})",
            self.path.display().to_string(),
            self.inner.vocab_size(),
            python_id(self.inner.bos_token_id()),
            python_id(self.inner.eos_token_id()),
            self.inner.pad_token_id()
        )
    }
}

/// Returns the text of a conversation argument: a string as it is, anything else (a list of
/// message dicts) as its JSON text.
fn conversation_text(conversation: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(text) = conversation.extract::<String>() {
        return Ok(text);
    }
    let json = conversation.py().import("json")?;
    json.call_method1("dumps", (conversation,))
        .and_then(|text| text.extract::<String>())
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "conversation must be a string or a list of message dicts, found {}",
                conversation
                    .get_type()
                    .name()
                    .map_or_else(|_| "?".to_owned(), |name| name.to_string())
            ))
        })
}

/// Reads the requested columns, or all of them in file order, as lists of strings.
#[pyfunction]
#[pyo3(signature = (path, columns = None))]
fn read_table<'py>(
    py: Python<'py>,
    path: PathBuf,
    columns: Option<Vec<String>>,
) -> PyResult<Bound<'py, PyDict>> {
    let table = py.detach(|| match &columns {
        Some(columns) => table::read_table(&path, columns),
        None => table::read_all_columns(&path),
    })?;
    let dict = PyDict::new(py);
    for (column, values) in table.columns.into_iter().zip(table.values) {
        dict.set_item(column, values)?;
    }
    Ok(dict)
}

/// Returns the column names of a file in file order.
#[pyfunction]
fn list_columns(py: Python<'_>, path: PathBuf) -> PyResult<Vec<String>> {
    Ok(py.detach(|| table::list_columns(&path))?)
}

/// Writes string columns to a CSV, JSON Lines or Parquet file.
#[pyfunction]
fn write_table(py: Python<'_>, path: PathBuf, columns: &Bound<'_, PyDict>) -> PyResult<()> {
    let mut owned: Vec<(String, Vec<String>)> = Vec::with_capacity(columns.len());
    for (name, values) in columns.iter() {
        let name: String = name
            .extract()
            .map_err(|_| PyTypeError::new_err("write_table: column names must be strings"))?;
        let values: Vec<String> = values.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "write_table: column {name:?} must be a list of strings"
            ))
        })?;
        owned.push((name, values));
    }
    py.detach(|| {
        let texts: Vec<Vec<&str>> = owned
            .iter()
            .map(|(_, values)| values.iter().map(String::as_str).collect())
            .collect();
        let columns: Vec<(&str, ColumnValues<'_>)> = owned
            .iter()
            .zip(&texts)
            .map(|((name, _), values)| (name.as_str(), ColumnValues::Text(values)))
            .collect();
        table_writer::write_table(&path, &columns)
    })?;
    Ok(())
}

/// Converts HH-RLHF records and writes them to `output` if given.
#[pyfunction]
#[pyo3(signature = (
    input, output = None, format = "dpo", max_samples = None, prompt = "last-turn",
    skip_bad_records = false
))]
fn convert_hh_rlhf<'py>(
    py: Python<'py>,
    input: PathBuf,
    output: Option<PathBuf>,
    format: &str,
    max_samples: Option<i64>,
    prompt: &str,
    skip_bad_records: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let format: OutputFormat = format.parse()?;
    let prompt: PromptMode = prompt.parse()?;
    let max_samples = max_samples
        .map(|value| to_usize("max_samples", value))
        .transpose()?;

    if let Some(output) = &output {
        hh_rlhf::check_output_path(output)?;
    }

    let options = ConvertOptions {
        format,
        max_samples,
        prompt,
        skip_bad_records,
    };
    let (conversion, rows) = py.detach(|| -> Result<_, Error> {
        let conversion = hh_rlhf::convert(&input, options)?;
        if let Some(output) = &output {
            hh_rlhf::write_rows(&conversion, output)?;
        }
        let rows = conversion.rows();
        Ok((conversion, rows))
    })?;

    let columns = PyDict::new(py);
    for (position, column) in conversion.columns().iter().enumerate() {
        let values: Vec<&str> = rows.iter().map(|row| row[position].as_str()).collect();
        columns.set_item(column, values)?;
    }
    let summary = PyDict::new(py);
    summary.set_item("read", conversion.num_read)?;
    summary.set_item("kept", conversion.num_kept)?;
    summary.set_item("written", conversion.num_rows())?;
    summary.set_item("skipped", conversion.num_skipped())?;
    summary.set_item("skip_reasons", &conversion.skip_reasons)?;
    summary.set_item("rows", columns)?;
    Ok(summary)
}

/// Reads `indices` from a list of ints or a 1-D integer numpy array and checks each against
/// the number of kept records.
fn extract_indices(indices: &Bound<'_, PyAny>, len: usize) -> PyResult<Vec<usize>> {
    let values: Vec<i64> = if let Ok(array) = indices.extract::<PyReadonlyArray1<'_, i64>>() {
        array
            .as_slice()
            .map(<[i64]>::to_vec)
            .unwrap_or_else(|_| array.as_array().to_vec())
    } else if let Ok(values) = indices.extract::<Vec<i64>>() {
        values
    } else {
        return Err(PyTypeError::new_err(format!(
            "indices must be a list of ints or a 1-D integer numpy array, found {}",
            indices.get_type().name()?
        )));
    };
    Ok(check_indices(&values, len)?)
}

fn batch_to_dict<'py>(py: Python<'py>, batch: Batch) -> PyResult<Bound<'py, PyDict>> {
    let shape = (batch.num_rows, batch.num_columns);
    // into_pyarray hands each Vec's buffer to numpy without a copy.
    let as_array = |values| Array2::from_shape_vec(shape, values).expect("the batch is B * T long");
    let input_ids: Bound<'py, PyArray2<i64>> = as_array(batch.input_ids).into_pyarray(py);
    let attention_mask: Bound<'py, PyArray2<i64>> = as_array(batch.attention_mask).into_pyarray(py);
    let position_ids: Bound<'py, PyArray2<i64>> = as_array(batch.position_ids).into_pyarray(py);
    let label_mask = Array2::from_shape_vec(shape, batch.label_mask)
        .expect("the batch is B * T long")
        .into_pyarray(py);

    let dict = PyDict::new(py);
    dict.set_item("input_ids", input_ids)?;
    dict.set_item("attention_mask", attention_mask)?;
    dict.set_item("label_mask", label_mask)?;
    dict.set_item("position_ids", position_ids)?;
    Ok(dict)
}

/// The `chat_template` argument of the dataset classes: None or False for none, True for the
/// tokenizer's own template, or the template text.
enum TemplateArgument {
    None,
    Tokenizer,
    Source(String),
}

impl<'a, 'py> FromPyObject<'a, 'py> for TemplateArgument {
    type Error = PyErr;

    fn extract(object: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if object.is_none() {
            return Ok(TemplateArgument::None);
        }
        if let Ok(flag) = object.extract::<bool>() {
            return Ok(if flag {
                TemplateArgument::Tokenizer
            } else {
                TemplateArgument::None
            });
        }
        match object.extract::<String>() {
            Ok(source) => Ok(TemplateArgument::Source(source)),
            Err(_) => Err(PyTypeError::new_err(format!(
                "chat_template must be None, a bool or the template text, found {}",
                object.get_type().name()?
            ))),
        }
    }
}

impl TemplateArgument {
    fn compile(&self, tokenizer: &TextTokenizer) -> Result<Option<ChatTemplate>, Error> {
        match self {
            TemplateArgument::None => Ok(None),
            TemplateArgument::Tokenizer => tokenizer.chat_template(None).map(Some),
            TemplateArgument::Source(source) => tokenizer.chat_template(Some(source)).map(Some),
        }
    }
}

fn batch_order_options(
    batch_size: i64,
    seed: u64,
    shuffle: bool,
    group_by_length: bool,
    drop_last: bool,
) -> Result<BatchOrderOptions, Error> {
    Ok(BatchOrderOptions {
        batch_size: to_usize("batch_size", batch_size)?,
        seed,
        shuffle,
        group_by_length,
        drop_last,
    })
}

fn batches_to_list<'py>(
    py: Python<'py>,
    batches: Vec<Vec<usize>>,
) -> PyResult<Vec<Bound<'py, PyArray1<i64>>>> {
    Ok(batches
        .into_iter()
        .map(|batch| usize_array(py, &batch))
        .collect())
}

/// Returns the padding share of `batches`, each a list or array of indices.
fn batches_padding_fraction(
    py: Python<'_>,
    batches: &Bound<'_, PyAny>,
    sizes: Vec<RecordSize>,
    pad_to_multiple_of: i64,
) -> PyResult<f64> {
    let pad_to_multiple_of = to_usize("pad_to_multiple_of", pad_to_multiple_of)?;
    let mut all = Vec::new();
    for batch in batches.try_iter()? {
        all.push(extract_indices(&batch?, sizes.len())?);
    }
    Ok(py.detach(|| padding_fraction(&all, &sizes, pad_to_multiple_of))?)
}

fn usize_array<'py>(py: Python<'py>, values: &[usize]) -> Bound<'py, PyArray1<i64>> {
    let values: Vec<i64> = values.iter().map(|&value| value as i64).collect();
    values.into_pyarray(py)
}

fn length_limits(
    max_length: i64,
    max_prompt_length: Option<i64>,
    truncation_mode: &str,
) -> Result<LengthLimits, Error> {
    let max_length = to_usize("max_length", max_length)?;
    let max_prompt_length = max_prompt_length
        .map(|value| to_usize("max_prompt_length", value))
        .transpose()?;
    LengthLimits::new(max_length, max_prompt_length, truncation_mode.parse()?)
}

/// Writes the `#[pymethods]` block of a dataset class: the methods given, then those that
/// every dataset class shares (length, drop counts, lengths, batch order and padding share).
/// One block per class, because pyo3 accepts a single `#[pymethods]` block per type.
macro_rules! dataset_pymethods {
    ($class:ident { $($methods:tt)* }) => {
        #[pymethods]
        impl $class {
            $($methods)*

        fn __len__(&self) -> usize {
            self.inner.len()
        }

        #[getter]
        fn num_dropped(&self) -> usize {
            self.inner.num_dropped()
        }

        #[getter]
        fn drop_reasons(&self) -> BTreeMap<String, usize> {
            self.inner.drop_reasons().clone()
        }

        #[getter]
        fn kept_indices<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
            usize_array(py, self.inner.kept_indices())
        }

        fn lengths<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
            usize_array(py, &self.inner.lengths())
        }

        #[pyo3(signature = (
            batch_size, seed = 0, group_by_length = true, shuffle = true, drop_last = false
        ))]
        fn batch_order<'py>(
            &self,
            py: Python<'py>,
            batch_size: i64,
            seed: u64,
            group_by_length: bool,
            shuffle: bool,
            drop_last: bool,
        ) -> PyResult<Vec<Bound<'py, PyArray1<i64>>>> {
            let options =
                batch_order_options(batch_size, seed, shuffle, group_by_length, drop_last)?;
            let batches = py.detach(|| self.inner.batch_order(options))?;
            batches_to_list(py, batches)
        }

        #[pyo3(signature = (batches, pad_to_multiple_of = 1))]
        fn padding_fraction(
            &self,
            py: Python<'_>,
            batches: &Bound<'_, PyAny>,
            pad_to_multiple_of: i64,
        ) -> PyResult<f64> {
            let sizes = self.inner.record_sizes();
            batches_padding_fraction(py, batches, sizes, pad_to_multiple_of)
        }
        }
    };
}

#[pyclass(name = "PairDataset", module = "pyalign._core", frozen)]
struct PyPairDataset {
    inner: PairDataset,
}

dataset_pymethods!(PyPairDataset {
    #[new]
    #[pyo3(signature = (
        tokenizer, prompts, chosen, rejected, max_length, max_prompt_length = None,
        truncation_mode = "keep_end", chat_template = TemplateArgument::None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        tokenizer: &PyTokenizer,
        prompts: Vec<String>,
        chosen: Vec<String>,
        rejected: Vec<String>,
        max_length: i64,
        max_prompt_length: Option<i64>,
        truncation_mode: &str,
        chat_template: TemplateArgument,
    ) -> PyResult<Self> {
        let limits = length_limits(max_length, max_prompt_length, truncation_mode)?;
        let tokenizer = Arc::clone(&tokenizer.inner);
        let inner = py.detach(|| -> Result<_, Error> {
            let template = chat_template.compile(&tokenizer)?;
            let template = template.as_ref();
            PairDataset::with_template(&tokenizer, &prompts, &chosen, &rejected, limits, template)
        })?;
        Ok(PyPairDataset { inner })
    }

    #[pyo3(signature = (indices, pad_to_multiple_of = 1, padding_side = "right"))]
    fn collate<'py>(
        &self,
        py: Python<'py>,
        indices: &Bound<'py, PyAny>,
        pad_to_multiple_of: i64,
        padding_side: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let indices = extract_indices(indices, self.inner.len())?;
        let pad_to_multiple_of = to_usize("pad_to_multiple_of", pad_to_multiple_of)?;
        let side: PaddingSide = padding_side.parse()?;
        let batch = py.detach(|| self.inner.collate_with(&indices, pad_to_multiple_of, side))?;
        batch_to_dict(py, batch)
    }

    #[pyo3(signature = (indices, pad_to_multiple_of = 1))]
    fn collate_prompts<'py>(
        &self,
        py: Python<'py>,
        indices: &Bound<'py, PyAny>,
        pad_to_multiple_of: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let indices = extract_indices(indices, self.inner.len())?;
        let pad_to_multiple_of = to_usize("pad_to_multiple_of", pad_to_multiple_of)?;
        let batch = py.detach(|| self.inner.collate_prompts(&indices, pad_to_multiple_of))?;
        batch_to_dict(py, batch)
    }

    fn __repr__(&self) -> String {
        format!(
            "PairDataset(len={}, num_dropped={})",
            self.inner.len(),
            self.inner.num_dropped()
        )
    }
});

#[pyclass(name = "ResponseDataset", module = "pyalign._core", frozen)]
struct PyResponseDataset {
    inner: ResponseDataset,
}

dataset_pymethods!(PyResponseDataset {
    #[new]
    #[pyo3(signature = (
        tokenizer, prompts, responses, max_length, max_prompt_length = None,
        truncation_mode = "keep_end", chat_template = TemplateArgument::None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        tokenizer: &PyTokenizer,
        prompts: Vec<String>,
        responses: Vec<String>,
        max_length: i64,
        max_prompt_length: Option<i64>,
        truncation_mode: &str,
        chat_template: TemplateArgument,
    ) -> PyResult<Self> {
        let limits = length_limits(max_length, max_prompt_length, truncation_mode)?;
        let tokenizer = Arc::clone(&tokenizer.inner);
        let inner = py.detach(|| -> Result<_, Error> {
            let template = chat_template.compile(&tokenizer)?;
            let template = template.as_ref();
            ResponseDataset::with_template(&tokenizer, &prompts, &responses, limits, template)
        })?;
        Ok(PyResponseDataset { inner })
    }

    #[pyo3(signature = (indices, pad_to_multiple_of = 1, padding_side = "right"))]
    fn collate<'py>(
        &self,
        py: Python<'py>,
        indices: &Bound<'py, PyAny>,
        pad_to_multiple_of: i64,
        padding_side: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let indices = extract_indices(indices, self.inner.len())?;
        let pad_to_multiple_of = to_usize("pad_to_multiple_of", pad_to_multiple_of)?;
        let side: PaddingSide = padding_side.parse()?;
        let batch = py.detach(|| self.inner.collate_with(&indices, pad_to_multiple_of, side))?;
        batch_to_dict(py, batch)
    }

    #[pyo3(signature = (
        prompt_indices, response_indices, pad_to_multiple_of = 1, padding_side = "right"
    ))]
    fn collate_pairs<'py>(
        &self,
        py: Python<'py>,
        prompt_indices: &Bound<'py, PyAny>,
        response_indices: &Bound<'py, PyAny>,
        pad_to_multiple_of: i64,
        padding_side: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let prompt_indices = extract_indices(prompt_indices, self.inner.len())?;
        let response_indices = extract_indices(response_indices, self.inner.len())?;
        let pad_to_multiple_of = to_usize("pad_to_multiple_of", pad_to_multiple_of)?;
        let side: PaddingSide = padding_side.parse()?;
        let batch = py.detach(|| {
            self.inner
                .collate_pairs_with(&prompt_indices, &response_indices, pad_to_multiple_of, side)
        })?;
        batch_to_dict(py, batch)
    }

    #[pyo3(signature = (indices, pad_to_multiple_of = 1))]
    fn collate_prompts<'py>(
        &self,
        py: Python<'py>,
        indices: &Bound<'py, PyAny>,
        pad_to_multiple_of: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let indices = extract_indices(indices, self.inner.len())?;
        let pad_to_multiple_of = to_usize("pad_to_multiple_of", pad_to_multiple_of)?;
        let batch = py.detach(|| self.inner.collate_prompts(&indices, pad_to_multiple_of))?;
        batch_to_dict(py, batch)
    }

    fn __repr__(&self) -> String {
        format!(
            "ResponseDataset(len={}, num_dropped={})",
            self.inner.len(),
            self.inner.num_dropped()
        )
    }
});

#[pyclass(name = "PromptDataset", module = "pyalign._core", frozen)]
struct PyPromptDataset {
    inner: PromptDataset,
}

dataset_pymethods!(PyPromptDataset {
    #[new]
    #[pyo3(signature = (
        tokenizer, prompts, max_prompt_length = None, truncation_mode = "keep_end",
        chat_template = TemplateArgument::None
    ))]
    fn new(
        py: Python<'_>,
        tokenizer: &PyTokenizer,
        prompts: Vec<String>,
        max_prompt_length: Option<i64>,
        truncation_mode: &str,
        chat_template: TemplateArgument,
    ) -> PyResult<Self> {
        let max_prompt_length = max_prompt_length
            .map(|value| to_usize("max_prompt_length", value))
            .transpose()?;
        let mode: TruncationMode = truncation_mode.parse()?;
        let tokenizer = Arc::clone(&tokenizer.inner);
        let inner = py.detach(|| -> Result<_, Error> {
            let template = chat_template.compile(&tokenizer)?;
            PromptDataset::new(&tokenizer, &prompts, max_prompt_length, mode, template.as_ref())
        })?;
        Ok(PyPromptDataset { inner })
    }

    #[pyo3(signature = (indices, pad_to_multiple_of = 1, padding_side = "left"))]
    fn collate<'py>(
        &self,
        py: Python<'py>,
        indices: &Bound<'py, PyAny>,
        pad_to_multiple_of: i64,
        padding_side: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let indices = extract_indices(indices, self.inner.len())?;
        let pad_to_multiple_of = to_usize("pad_to_multiple_of", pad_to_multiple_of)?;
        let side: PaddingSide = padding_side.parse()?;
        let batch = py.detach(|| self.inner.collate(&indices, pad_to_multiple_of, side))?;
        batch_to_dict(py, batch)
    }

    fn __repr__(&self) -> String {
        format!(
            "PromptDataset(len={}, num_dropped={})",
            self.inner.len(),
            self.inner.num_dropped()
        )
    }
});

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // Caching::Loggers looks up the Python level on each record, so a logging configuration
    // made after import still applies. The crate logs a few records per call, never per token.
    // install() fails only when a `log` logger is already set in this process, and that logger
    // then stays.
    let logger = pyo3_log::Logger::new(module.py(), pyo3_log::Caching::Loggers)?
        .filter_target("tokenizers".to_owned(), log::LevelFilter::Warn);
    let _ = logger.install();

    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_class::<PyTokenizer>()?;
    module.add_class::<PyPairDataset>()?;
    module.add_class::<PyResponseDataset>()?;
    module.add_class::<PyPromptDataset>()?;
    module.add_function(wrap_pyfunction!(read_table, module)?)?;
    module.add_function(wrap_pyfunction!(list_columns, module)?)?;
    module.add_function(wrap_pyfunction!(write_table, module)?)?;
    module.add_function(wrap_pyfunction!(convert_hh_rlhf, module)?)?;
    Ok(())
}

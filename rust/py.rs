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

use crate::batch::{check_indices, Batch, LengthLimits, PairDataset, ResponseDataset};
use crate::error::Error;
use crate::hh_rlhf::{self, ConvertOptions, OutputFormat};
use crate::table;
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

/// Reads the requested columns of a CSV, JSON Lines or JSON file as lists of strings.
#[pyfunction]
fn read_table<'py>(
    py: Python<'py>,
    path: PathBuf,
    columns: Vec<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let table = py.detach(|| table::read_table(&path, &columns))?;
    let dict = PyDict::new(py);
    for (column, values) in table.columns.into_iter().zip(table.values) {
        dict.set_item(column, values)?;
    }
    Ok(dict)
}

/// Converts HH-RLHF records by the last-turn rule and writes them to `output` if given.
#[pyfunction]
#[pyo3(signature = (input, output = None, format = "dpo", max_samples = None))]
fn convert_hh_rlhf<'py>(
    py: Python<'py>,
    input: PathBuf,
    output: Option<PathBuf>,
    format: &str,
    max_samples: Option<i64>,
) -> PyResult<Bound<'py, PyDict>> {
    let format: OutputFormat = format.parse()?;
    let max_samples = max_samples
        .map(|value| to_usize("max_samples", value))
        .transpose()?;

    if let Some(output) = &output {
        hh_rlhf::check_output_path(output)?;
    }

    let conversion = py.detach(|| -> Result<_, Error> {
        let conversion = hh_rlhf::convert(
            &input,
            ConvertOptions {
                format,
                max_samples,
            },
        )?;
        if let Some(output) = &output {
            hh_rlhf::write_rows(&conversion, output, format)?;
        }
        Ok(conversion)
    })?;

    let rows = PyDict::new(py);
    for (position, column) in conversion.columns.iter().enumerate() {
        let values: Vec<&str> = conversion
            .rows
            .iter()
            .map(|row| row[position].as_str())
            .collect();
        rows.set_item(column, values)?;
    }
    let summary = PyDict::new(py);
    summary.set_item("read", conversion.num_read)?;
    summary.set_item("kept", conversion.num_kept)?;
    summary.set_item("written", conversion.rows.len())?;
    summary.set_item("skipped", conversion.num_skipped())?;
    summary.set_item("skip_reasons", &conversion.skip_reasons)?;
    summary.set_item("rows", rows)?;
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
    let as_array = |values| Array2::from_shape_vec(shape, values).expect("the batch is B * T long");
    let input_ids: Bound<'py, PyArray2<i64>> = as_array(batch.input_ids).into_pyarray(py);
    let attention_mask: Bound<'py, PyArray2<i64>> = as_array(batch.attention_mask).into_pyarray(py);
    let label_mask = Array2::from_shape_vec(shape, batch.label_mask)
        .expect("the batch is B * T long")
        .into_pyarray(py);

    let dict = PyDict::new(py);
    dict.set_item("input_ids", input_ids)?;
    dict.set_item("attention_mask", attention_mask)?;
    dict.set_item("label_mask", label_mask)?;
    Ok(dict)
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

#[pyclass(name = "PairDataset", module = "pyalign._core", frozen)]
struct PyPairDataset {
    inner: PairDataset,
}

#[pymethods]
impl PyPairDataset {
    #[new]
    #[pyo3(signature = (
        tokenizer, prompts, chosen, rejected, max_length, max_prompt_length = None,
        truncation_mode = "keep_end"
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
    ) -> PyResult<Self> {
        let limits = length_limits(max_length, max_prompt_length, truncation_mode)?;
        let tokenizer = Arc::clone(&tokenizer.inner);
        let inner =
            py.detach(|| PairDataset::new(&tokenizer, &prompts, &chosen, &rejected, limits))?;
        Ok(PyPairDataset { inner })
    }

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

    #[pyo3(signature = (indices, pad_to_multiple_of = 1))]
    fn collate<'py>(
        &self,
        py: Python<'py>,
        indices: &Bound<'py, PyAny>,
        pad_to_multiple_of: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let indices = extract_indices(indices, self.inner.len())?;
        let pad_to_multiple_of = to_usize("pad_to_multiple_of", pad_to_multiple_of)?;
        let batch = py.detach(|| self.inner.collate(&indices, pad_to_multiple_of))?;
        batch_to_dict(py, batch)
    }

    fn __repr__(&self) -> String {
        format!(
            "PairDataset(len={}, num_dropped={})",
            self.inner.len(),
            self.inner.num_dropped()
        )
    }
}

#[pyclass(name = "ResponseDataset", module = "pyalign._core", frozen)]
struct PyResponseDataset {
    inner: ResponseDataset,
}

#[pymethods]
impl PyResponseDataset {
    #[new]
    #[pyo3(signature = (
        tokenizer, prompts, responses, max_length, max_prompt_length = None,
        truncation_mode = "keep_end"
    ))]
    fn new(
        py: Python<'_>,
        tokenizer: &PyTokenizer,
        prompts: Vec<String>,
        responses: Vec<String>,
        max_length: i64,
        max_prompt_length: Option<i64>,
        truncation_mode: &str,
    ) -> PyResult<Self> {
        let limits = length_limits(max_length, max_prompt_length, truncation_mode)?;
        let tokenizer = Arc::clone(&tokenizer.inner);
        let inner = py.detach(|| ResponseDataset::new(&tokenizer, &prompts, &responses, limits))?;
        Ok(PyResponseDataset { inner })
    }

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

    #[pyo3(signature = (indices, pad_to_multiple_of = 1))]
    fn collate<'py>(
        &self,
        py: Python<'py>,
        indices: &Bound<'py, PyAny>,
        pad_to_multiple_of: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let indices = extract_indices(indices, self.inner.len())?;
        let pad_to_multiple_of = to_usize("pad_to_multiple_of", pad_to_multiple_of)?;
        let batch = py.detach(|| self.inner.collate(&indices, pad_to_multiple_of))?;
        batch_to_dict(py, batch)
    }

    #[pyo3(signature = (prompt_indices, response_indices, pad_to_multiple_of = 1))]
    fn collate_pairs<'py>(
        &self,
        py: Python<'py>,
        prompt_indices: &Bound<'py, PyAny>,
        response_indices: &Bound<'py, PyAny>,
        pad_to_multiple_of: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let prompt_indices = extract_indices(prompt_indices, self.inner.len())?;
        let response_indices = extract_indices(response_indices, self.inner.len())?;
        let pad_to_multiple_of = to_usize("pad_to_multiple_of", pad_to_multiple_of)?;
        let batch = py.detach(|| {
            self.inner
                .collate_pairs(&prompt_indices, &response_indices, pad_to_multiple_of)
        })?;
        batch_to_dict(py, batch)
    }

    fn __repr__(&self) -> String {
        format!(
            "ResponseDataset(len={}, num_dropped={})",
            self.inner.len(),
            self.inner.num_dropped()
        )
    }
}

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
    module.add_function(wrap_pyfunction!(read_table, module)?)?;
    module.add_function(wrap_pyfunction!(convert_hh_rlhf, module)?)?;
    Ok(())
}

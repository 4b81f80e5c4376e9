import SigmaModel

// Messages that carry bulk bytes in pieces: input files to workers (FILE-GET / FILE-DATA) and stored results to
// clients (RESULT-GET / RESULT-DATA).

/// FILE-GET (worker → coordinator): bytes `offset..<offset+length` of input file `index` of a job whose spec says
/// `input_transport: coordinator` (the files `JobSpec.workerInputFiles` lists, in that order). `length` 0 asks for
/// the file's identity only.
public struct FileGet: Sendable, Equatable {
    public var request: UInt64
    public var job: JobID
    public var index: UInt32
    public var offset: UInt64
    public var length: UInt32
    /// Most bytes one FILE-GET may ask for.
    public static let maxLength: UInt32 = 16 << 20
    public init(request: UInt64, job: JobID, index: UInt32, offset: UInt64, length: UInt32) {
        self.request = request
        self.job = job
        self.index = index
        self.offset = offset
        self.length = length
    }
}

/// FILE-DATA (coordinator → worker): the answer to a FILE-GET — how many input files the job has, file `index`'s
/// path on the coordinator, size and SHA-256 (64 lowercase hex digits), and its bytes from `offset` (the payload;
/// shorter than asked at the end of the file).
public struct FileData: Sendable, Equatable {
    public var request: UInt64
    public var job: JobID
    public var index: UInt32
    public var files: UInt32
    public var path: String
    public var size: UInt64
    public var sha256: String
    public var offset: UInt64
    public var payload: Frame
    public init(request: UInt64, job: JobID, index: UInt32, files: UInt32, path: String, size: UInt64, sha256: String,
                offset: UInt64, payload: Frame = .empty) {
        self.request = request
        self.job = job
        self.index = index
        self.files = files
        self.path = path
        self.size = size
        self.sha256 = sha256
        self.offset = offset
        self.payload = payload
    }
}

/// RESULT-GET (client → coordinator): bytes `offset..<offset+length` of an ended job's result.
public struct ResultGet: Sendable, Equatable {
    public var request: UInt64
    public var job: JobID
    public var offset: UInt64
    public var length: UInt32
    /// Most bytes one RESULT-GET may ask for.
    public static let maxLength: UInt32 = 16 << 20
    public init(request: UInt64, job: JobID, offset: UInt64, length: UInt32) {
        self.request = request
        self.job = job
        self.offset = offset
        self.length = length
    }
}

/// RESULT-DATA (coordinator → client): the answer to a RESULT-GET — the result's size and its bytes from `offset`
/// (the payload; shorter than asked at the end).
public struct ResultData: Sendable, Equatable {
    public var request: UInt64
    public var job: JobID
    public var size: UInt64
    public var offset: UInt64
    public var payload: Frame
    public init(request: UInt64, job: JobID, size: UInt64, offset: UInt64, payload: Frame = .empty) {
        self.request = request
        self.job = job
        self.size = size
        self.offset = offset
        self.payload = payload
    }
}
